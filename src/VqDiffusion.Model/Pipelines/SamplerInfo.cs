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
