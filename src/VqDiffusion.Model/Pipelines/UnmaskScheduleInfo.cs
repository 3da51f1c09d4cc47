namespace VqDiffusion.Model.Pipelines;

/// <summary>One of the original's default unmask schedules (n_sample) for the model's T.</summary>
/// <param name="AppliesTo">When the original uses it.</param>
/// <param name="Counts">Tokens to unmask per timestep, index = t.</param>
/// <param name="FitsLatentGrid">Whether the model's grid has the tokens it unmasks before t = 0 (else prior requests must give their own).</param>
public sealed record UnmaskScheduleInfo(string AppliesTo, IReadOnlyList<int> Counts, bool FitsLatentGrid);
