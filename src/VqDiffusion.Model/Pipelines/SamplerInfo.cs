namespace VqDiffusion.Model.Pipelines;

/// <summary>What a sampler family offers on the loaded model (reported by <c>GetModelInfo</c>).</summary>
/// <param name="Kind">The family.</param>
/// <param name="Name">Its name in requests and on the command line (<c>diffusers</c>, <c>vq-diffusion</c>).</param>
/// <param name="IsDefault">Whether requests without sampler options use it.</param>
/// <param name="Description">One sentence on what it does.</param>
/// <param name="MinSpeed">The smallest <see cref="SamplerOptions.Speed"/> it takes.</param>
/// <param name="MaxSpeed">The largest.</param>
/// <param name="Speeds">Representative speeds and the network calls they cost.</param>
/// <param name="DefaultUnmaskSchedules">The original's unmask schedules for this model's T.</param>
public sealed record SamplerInfo(
    SamplerKind Kind,
    string Name,
    bool IsDefault,
    string Description,
    double MinSpeed,
    double MaxSpeed,
    IReadOnlyList<SpeedInfo> Speeds,
    IReadOnlyList<UnmaskScheduleInfo> DefaultUnmaskSchedules);

/// <summary>One speed of the vq-diffusion sampler.</summary>
/// <param name="Speed">The speed (the original's infer_speed).</param>
/// <param name="Mode"><c>high-quality</c> (below 1), <c>plain</c> (1 to 2) or <c>fast</c> (2 and above).</param>
/// <param name="NetworkCalls">Network evaluations of the batch without a prior; 0 where they depend on an unmask schedule the request must give.</param>
/// <param name="TokensPerCall">High-quality inference: at most this many tokens unmasked per call (prior_ps); 0 otherwise.</param>
public sealed record SpeedInfo(double Speed, string Mode, int NetworkCalls, int TokensPerCall);

/// <summary>One of the original's default unmask schedules (n_sample) for the model's T.</summary>
/// <param name="AppliesTo">When the original uses it.</param>
/// <param name="Counts">Tokens to unmask per timestep, index = t.</param>
/// <param name="FitsLatentGrid">Whether the model's grid has the tokens it unmasks before t = 0 (else prior requests must give their own).</param>
public sealed record UnmaskScheduleInfo(string AppliesTo, IReadOnlyList<int> Counts, bool FitsLatentGrid);
