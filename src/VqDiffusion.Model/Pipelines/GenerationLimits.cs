namespace VqDiffusion.Model.Pipelines;

/// <summary>Upper bounds a deployment puts on requests (the model itself fixes the rest).</summary>
public sealed record GenerationLimits
{
    public int MaxPrompts { get; init; } = 16;

    public int MaxPromptCharacters { get; init; } = 4096;

    public int MaxImagesPerPrompt { get; init; } = 8;

    /// <summary>Maximum prompts × images per prompt of one request.</summary>
    public int MaxBatchSize { get; init; } = 16;

    public float MaxGuidanceScale { get; init; } = 100f;
}
