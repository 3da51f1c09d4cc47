namespace VqDiffusion.Model.Pipelines;

/// <summary>The images of a request in diffusers' batch order, and the seed that made them.</summary>
public sealed record GenerationResult(IReadOnlyList<GeneratedImage> Images, ulong Seed, IReadOnlyList<long> Timesteps);
