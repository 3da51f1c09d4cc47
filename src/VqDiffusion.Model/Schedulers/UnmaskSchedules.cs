namespace VqDiffusion.Model.Schedulers;

/// <summary>
/// The original's <c>n_sample</c> lists (<c>DiffusionTransformer.update_n_sample</c>): per timestep t (index = t), how
/// many tokens of each image its prior sampling unmasks. They exist for T ∈ {100, 50, 25, 10} and unmask 1024 tokens
/// (the 32 × 32 ITHQ grid) before t = 0; for T = 100 the list depends on whether at most 10 tokens are unmasked per
/// network call (<c>prior_ps</c>).
/// </summary>
public static class UnmaskSchedules
{
    /// <summary>The original's latent grid size, hard-coded in its <c>prior_ps</c> formula and lists.</summary>
    public const int OriginalGridTokens = 1024;

    /// <summary>The list the original uses for <paramref name="numTimesteps"/> and <paramref name="priorPs"/>; null where it has none.</summary>
    public static int[]? Default(int numTimesteps, int priorPs) => numTimesteps switch
    {
        100 when priorPs <= 10 => [1, 6, .. Repeat([11, 10, 10], 32), 11, 15],
        100 => [1, 10, .. Repeat([11, 10, 10], 32), 11, 11],
        50 => [10, .. Repeat([21, 20], 24), 30],
        25 => [21, .. Repeat([41], 23), 60],
        10 => [69, .. Repeat([102], 8), 139],
        _ => null,
    };

    /// <summary>Tokens a schedule unmasks before its last step (t ≥ 1), where the prior decides which.</summary>
    public static long TokensBeforeLastStep(IReadOnlyList<int> schedule) => schedule.Skip(1).Sum(n => (long)n);

    private static int[] Repeat(int[] pattern, int times) => Enumerable.Repeat(pattern, times).SelectMany(p => p).ToArray();
}
