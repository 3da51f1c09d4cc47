using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Server.Options;

/// <summary>Configuration section <c>Generation</c>: request limits and the queue.</summary>
public sealed class GenerationOptions
{
    public const string Section = "Generation";

    /// <summary>Requests that may wait for the model; more get RESOURCE_EXHAUSTED.</summary>
    public int MaxQueueLength { get; set; } = 16;

    /// <summary>
    /// Runs denoised at once, one step of each in turn; queued requests are admitted between steps while fewer
    /// are active. 1 = strictly one request after the other.
    /// </summary>
    public int MaxActiveRuns { get; set; } = 4;

    /// <summary>
    /// Step all active runs with one transformer forward (per-sample timesteps) instead of one run after the other.
    /// Off by default: the larger matrix products may round differently from a run's own forward (measured identical
    /// on the golden runs); on a CPU the forward is already at the GEMM rate, so it mainly helps GPUs.
    /// </summary>
    public bool BatchedForwards { get; set; }

    public int MaxPrompts { get; set; } = 16;

    public int MaxPromptCharacters { get; set; } = 2048;

    public int MaxImagesPerPrompt { get; set; } = 8;

    public int MaxBatchSize { get; set; } = 16;

    public float MaxGuidanceScale { get; set; } = 100f;

    /// <summary>JPEG/WebP quality when a request leaves it at 0.</summary>
    public int DefaultImageQuality { get; set; } = 90;

    /// <summary>
    /// Bytes of unsent events a stream may hold before progress and snapshots are coalesced for a slow reader
    /// (<see cref="Queue.GenerationEventBuffer"/>; README "Memory bounds").
    /// </summary>
    public long EventBufferBytes { get; set; } = Queue.GenerationEventBuffer.DefaultBudgetBytes;

    public GenerationLimits ToLimits() => new()
    {
        MaxPrompts = MaxPrompts,
        MaxPromptCharacters = MaxPromptCharacters,
        MaxImagesPerPrompt = MaxImagesPerPrompt,
        MaxBatchSize = MaxBatchSize,
        MaxGuidanceScale = MaxGuidanceScale,
    };
}
