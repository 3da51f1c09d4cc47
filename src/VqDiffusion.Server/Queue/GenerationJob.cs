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
/// One accepted request: what to generate, how to encode it, and the channel its events go to.
/// The job is cancelled when the call is (client cancel, deadline, disconnect).
/// </summary>
public sealed class GenerationJob
{
    private readonly Channel<GenerationEvent> _events = Channel.CreateUnbounded<GenerationEvent>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false });

    public GenerationJob(string requestId, GenerationRequest request, ImageFormat imageFormat, int imageQuality, SnapshotSettings snapshots, CancellationToken cancellationToken)
    {
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

    public ChannelReader<GenerationEvent> Events => _events.Reader;

    internal void Post(GenerationEvent e) => _events.Writer.TryWrite(e);

    internal void Complete(Exception? error = null) => _events.Writer.TryComplete(error);
}
