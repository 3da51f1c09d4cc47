namespace VqDiffusion.Server.Queue;

/// <summary>
/// What the worker reports about one job. Plain data (no tensors): the gRPC service maps these to
/// proto messages.
/// </summary>
public abstract record GenerationEvent;

public sealed record QueuedEvent(int Position, int QueueLength) : GenerationEvent;

public sealed record StartedEvent(ulong Seed, IReadOnlyList<long> Timesteps, TimeSpan QueueWait) : GenerationEvent;

public sealed record ProgressEvent(int CompletedSteps, int TotalSteps, long Timestep, TimeSpan Elapsed) : GenerationEvent;

public sealed record SnapshotEvent(
    int CompletedSteps,
    long Timestep,
    int ImageIndex,
    int Height,
    int Width,
    int[]? Tokens,
    int MaskedCount,
    byte[]? Preview,
    string? PreviewMimeType) : GenerationEvent;

public sealed record ImageEvent(int Index, int PromptIndex, byte[] Data, string MimeType, int Width, int Height, ulong Seed) : GenerationEvent;

/// <summary>The end of a job; <paramref name="DroppedEvents"/> is stamped by the job's <see cref="GenerationEventBuffer"/>.</summary>
public sealed record CompletedEvent(TimeSpan QueueWait, TimeSpan GenerationTime, TimeSpan MeanStepTime, TimeSpan DecodeTime, int NumImages, int DroppedEvents = 0) : GenerationEvent;
