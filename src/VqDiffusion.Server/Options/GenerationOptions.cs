using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Server.Options;

/// <summary>
/// Configuration section <c>Generation</c>: request limits, the queue, shutdown and fairness. The request limits
/// default to <see cref="GenerationLimits.Default"/> (defined there, once); the README's Operations section lists
/// every key, its default and its check (<see cref="GenerationOptionsValidator"/>).
/// </summary>
public sealed class GenerationOptions
{
    public const string Section = "Generation";

    /// <summary>The largest <see cref="DrainTimeout"/> and <see cref="ShutdownMargin"/> accepted.</summary>
    public static readonly TimeSpan MaxShutdownTime = TimeSpan.FromHours(1);

    /// <summary>Requests that may wait for the model (at least 1); more get RESOURCE_EXHAUSTED.</summary>
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

    public int MaxPrompts { get; set; } = GenerationLimits.Default.MaxPrompts;

    /// <summary>Characters (Unicode scalar values) per prompt.</summary>
    public int MaxPromptCharacters { get; set; } = GenerationLimits.Default.MaxPromptCharacters;

    public int MaxImagesPerPrompt { get; set; } = GenerationLimits.Default.MaxImagesPerPrompt;

    public int MaxBatchSize { get; set; } = GenerationLimits.Default.MaxBatchSize;

    public float MaxGuidanceScale { get; set; } = GenerationLimits.Default.MaxGuidanceScale;

    /// <summary>JPEG/WebP quality when a request leaves it at 0.</summary>
    public int DefaultImageQuality { get; set; } = 90;

    /// <summary>
    /// On shutdown (SIGTERM), how long runs in progress may go on to finish; then they stop at their next step
    /// boundary with UNAVAILABLE. Queued requests end at once.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Time after <see cref="DrainTimeout"/> for the runs still going to reach their step boundary and their streams to
    /// close; the host's shutdown timeout is <see cref="DrainTimeout"/> + this.
    /// </summary>
    public TimeSpan ShutdownMargin { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Requests one caller may have waiting in the queue; more get RESOURCE_EXHAUSTED. 0 = no per-caller limit.</summary>
    public int MaxQueuedPerCaller { get; set; } = 8;

    /// <summary>Runs of one caller denoised at once; its other requests wait while others' are admitted. 0 = up to <see cref="MaxActiveRuns"/>.</summary>
    public int MaxActivePerCaller { get; set; }

    /// <summary>The host's shutdown timeout: <see cref="DrainTimeout"/> + <see cref="ShutdownMargin"/>.</summary>
    public TimeSpan ShutdownTimeout => DrainTimeout + ShutdownMargin;

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
