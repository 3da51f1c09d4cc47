using System.Diagnostics;
using System.Threading.Channels;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Server.Queue;

/// <summary>Snapshot settings of a job, already validated.</summary>
public sealed record SnapshotSettings(int EveryNSteps, bool IncludeTokens, bool IncludePreview, ImageFormat PreviewFormat, int PreviewQuality)
{
    public static SnapshotSettings None { get; } = new(0, false, false, ImageFormat.Png, ImageEncoder.DefaultQuality);

    public bool IsDue(int completedSteps, int totalSteps) =>
        EveryNSteps > 0 && (completedSteps % EveryNSteps == 0 || completedSteps == totalSteps);
}

/// <summary>
/// One accepted request: what to generate, how to encode it, and the bounded buffer its events go to
/// (<see cref="GenerationEventBuffer"/>: posting never blocks the model thread; a lagging reader gets the latest
/// progress and snapshots, counted in <see cref="DroppedEvents"/>). The job is cancelled when the call is (client
/// cancel, deadline, disconnect).
/// </summary>
public sealed class GenerationJob
{
    private readonly GenerationEventBuffer _events;

    public GenerationJob(
        string requestId,
        GenerationRequest request,
        ImageFormat imageFormat,
        int imageQuality,
        SnapshotSettings snapshots,
        CancellationToken cancellationToken,
        long eventBufferBytes = GenerationEventBuffer.DefaultBudgetBytes)
    {
        _events = new GenerationEventBuffer(eventBufferBytes);
        RequestId = requestId;
        Request = request;
        ImageFormat = imageFormat;
        ImageQuality = imageQuality;
        Snapshots = snapshots;
        CancellationToken = cancellationToken;
    }

    public string RequestId { get; }

    public GenerationRequest Request { get; }

    public ImageFormat ImageFormat { get; }

    public int ImageQuality { get; }

    public SnapshotSettings Snapshots { get; }

    public CancellationToken CancellationToken { get; }

    /// <summary>Who sent it (<see cref="Services.ICallerIdentity"/>), for the per-caller limits; empty = anonymous.</summary>
    public string Caller { get; set; } = string.Empty;

    /// <summary>Started when the job is accepted; the queue wait is read from it when it starts.</summary>
    public Stopwatch SinceAccepted { get; } = Stopwatch.StartNew();

    public ChannelReader<GenerationEvent> Events => _events;

    /// <summary>Progress, snapshot and queued events replaced by a later one because the reader lagged.</summary>
    public int DroppedEvents => _events.DroppedEvents;

    /// <summary>The most bytes of unsent events this job held at once (estimated).</summary>
    public long PeakBufferedBytes => _events.PeakBufferedBytes;

    internal void Post(GenerationEvent e) => _events.Post(e);

    internal void Complete(Exception? error = null) => _events.Complete(error);
}
