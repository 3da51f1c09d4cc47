namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// Where a run starts, as a sampler family needs to know it: the first timestep (T − 1, n − 1, or ⌊T · strength⌋ − 1
/// for an edit) and the fewest masked tokens any image starts with (the tokens a prior can unmask).
/// </summary>
/// <param name="EditStrength">The edit's strength when the source is noised (the original's <c>filter_ratio</c>); null otherwise.</param>
/// <param name="MinMaskedTokens">The smallest number of mask-class tokens in any image's start state.</param>
internal sealed record SamplingStart(double? EditStrength, long MinMaskedTokens)
{
    /// <summary>The original's <c>start_step = int(T · filter_ratio)</c>.</summary>
    public static int EditStartStep(int numTimesteps, double strength) => (int)(numTimesteps * strength);
}
