namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// Which masked positions the <see cref="SamplerKind.VQDiffusion"/> sampler unmasks first (the original's
/// <c>prior_rule</c>, Improved VQ-Diffusion § 3.2).
/// </summary>
public enum UnmaskPrior
{
    /// <summary><c>prior_rule = 0</c>: VQ-Diffusion v1, every position drawn from the posterior at every step.</summary>
    None,

    /// <summary>
    /// <c>prior_rule = 1</c> ("high-quality inference"): a scheduled number of positions per step, chosen uniformly
    /// among the masked ones. Speeds below 1 select it when no prior is given, as the original does.
    /// </summary>
    HighQuality,

    /// <summary>
    /// <c>prior_rule = 2</c> (the purity prior): positions chosen with probability proportional to their purity (the
    /// top predicted probability), optionally sharpened by <see cref="SamplerOptions.PriorWeight"/> (the paper's r).
    /// </summary>
    Purity,
}
