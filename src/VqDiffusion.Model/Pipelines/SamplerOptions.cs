namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// How a request is sampled. The defaults are diffusers' sampler; everything but <see cref="ClassifierFreeEmbeddings"/>
/// applies to <see cref="SamplerKind.VQDiffusion"/> only.
/// </summary>
public sealed record SamplerOptions
{
    public const double DefaultSpeed = 1.0;

    public static SamplerOptions Default { get; } = new();

    public SamplerKind Kind { get; init; } = SamplerKind.Diffusers;

    /// <summary>
    /// The original's <c>infer_speed</c> (sample_type <c>"…,time{speed}"</c>): 1 (and anything below 2) = one network
    /// call per timestep; ≥ 2 = fast inference with skip = ⌊speed⌋ − 1 (⌈T / ⌊speed⌋⌉ calls, plus t = 0); below 1 =
    /// high-quality inference, at most <c>⌊(1024 // T) · speed⌋</c> tokens unmasked per call.
    /// </summary>
    public double Speed { get; init; } = DefaultSpeed;

    public UnmaskPrior Prior { get; init; } = UnmaskPrior.None;

    /// <summary>The purity prior's weight r (the original's <c>prior_weight</c>, Equation 11); 0 = no reweighting.</summary>
    public double PriorWeight { get; init; }

    /// <summary>
    /// Tokens to unmask per timestep with a prior (the original's <c>n_sample</c>; index = t, T entries); null = the
    /// original's list for the model's T where it has one.
    /// </summary>
    public IReadOnlyList<int>? UnmaskSchedule { get; init; }

    public ClassifierFreeEmbeddings ClassifierFreeEmbeddings { get; init; } = ClassifierFreeEmbeddings.ModelDefault;
}
