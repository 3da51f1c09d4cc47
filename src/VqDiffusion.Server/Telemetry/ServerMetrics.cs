using System.Diagnostics;
using System.Diagnostics.Metrics;
using Grpc.Core;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// The server's instruments, on the <see cref="System.Diagnostics.Metrics.Meter"/> <c>VqDiffusion.Server</c>
/// (one per host, from the host's <see cref="IMeterFactory"/>). Names are chosen so that the OpenTelemetry
/// Prometheus exporter's translation (unit suffix <c>_seconds</c>, <c>_total</c> on counters) gives the series
/// listed in the README: <c>vqd_queue_length</c>, <c>vqd_requests_total</c>, <c>vqd_step_duration_seconds</c>, ...
/// Recording is lock-free or a short in-memory update: the model thread never waits on a scrape.
/// </summary>
public sealed class ServerMetrics
{
    public const string MeterName = "VqDiffusion.Server";

    private static readonly string[] ModelStates = ["loading", "ready", "failed"];

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _queueTime;
    private readonly Histogram<double> _firstProgress;
    private readonly Histogram<double> _stepDuration;
    private readonly Counter<long> _images;
    private readonly Histogram<double> _decode;
    private int _activeRuns;

    public ServerMetrics(IMeterFactory meterFactory, GenerationQueue queue, ModelHost model)
    {
        Meter = meterFactory.Create(new MeterOptions(MeterName) { Version = VqDiffusionServerVersion });

        Meter.CreateObservableGauge("vqd_queue_length", () => queue.Count, description: "Requests waiting in the queue (not yet admitted to the model).");
        Meter.CreateObservableGauge("vqd_active_runs", () => Volatile.Read(ref _activeRuns), description: "Requests being denoised (admitted runs, at most Generation:MaxActiveRuns).");
        _requests = Meter.CreateCounter<long>("vqd_requests", description: "Finished calls of vqdiffusion.v1.VqDiffusionService by method and final gRPC status code.");
        _queueTime = Meter.CreateHistogram("vqd_queue_time", "s", "Time from acceptance to admission to the model.", advice: Buckets(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600));
        _firstProgress = Meter.CreateHistogram("vqd_first_progress", "s", "Time from acceptance to the first progress event (queue, text encoding and the first step).", advice: Buckets(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600));
        _stepDuration = Meter.CreateHistogram("vqd_step_duration", "s", "Duration of one denoising step of one run (a shared forward counts for each run in it).", advice: Buckets(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10));
        _images = Meter.CreateCounter<long>("vqd_images_generated", description: "Images decoded, encoded and sent.");
        _decode = Meter.CreateHistogram("vqd_decode", "s", "VQ-VAE decoding and image encoding of a request's images.", advice: Buckets(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30));
        Meter.CreateObservableGauge("vqd_model_load", () => LoadSeconds(model), "s", "Duration of the model load and warm-up generation (present once the model is ready).");
        Meter.CreateObservableGauge("vqd_model_serving", () => model.State == ModelState.Ready ? 1 : 0, description: "1 when the model is loaded and requests are served, else 0.");
        Meter.CreateObservableGauge("vqd_model_state", () => StateMeasurements(model.State), description: "1 for the model's current state (label state: loading, ready, failed), 0 for the others.");
    }

    /// <summary>The meter of this host; the metrics pipeline exports its instruments only.</summary>
    public Meter Meter { get; }

    private static string? VqDiffusionServerVersion => VqDiffusionGrpcService.ServerVersion;

    /// <summary>Gauge value of <c>vqd_active_runs</c>; set by the worker between steps.</summary>
    public void SetActiveRuns(int count) => Volatile.Write(ref _activeRuns, count);

    public void CallEnded(string method, StatusCode code)
    {
        var tags = new TagList { { "method", method }, { "code", StatusCodeName(code) } };
        _requests.Add(1, tags);
    }

    public void LeftQueue(TimeSpan queueWait) => _queueTime.Record(queueWait.TotalSeconds);

    public void FirstProgress(TimeSpan sinceAccepted) => _firstProgress.Record(sinceAccepted.TotalSeconds);

    public void StepCompleted(TimeSpan stepTime) => _stepDuration.Record(stepTime.TotalSeconds);

    public void Decoded(TimeSpan decodeTime, int images)
    {
        _decode.Record(decodeTime.TotalSeconds);
        _images.Add(images);
    }

    /// <summary>The canonical upper-case name of a status code (<c>INVALID_ARGUMENT</c>), as in the gRPC specification.</summary>
    public static string StatusCodeName(StatusCode code) => code switch
    {
        StatusCode.OK => "OK",
        StatusCode.Cancelled => "CANCELLED",
        StatusCode.Unknown => "UNKNOWN",
        StatusCode.InvalidArgument => "INVALID_ARGUMENT",
        StatusCode.DeadlineExceeded => "DEADLINE_EXCEEDED",
        StatusCode.NotFound => "NOT_FOUND",
        StatusCode.AlreadyExists => "ALREADY_EXISTS",
        StatusCode.PermissionDenied => "PERMISSION_DENIED",
        StatusCode.ResourceExhausted => "RESOURCE_EXHAUSTED",
        StatusCode.FailedPrecondition => "FAILED_PRECONDITION",
        StatusCode.Aborted => "ABORTED",
        StatusCode.OutOfRange => "OUT_OF_RANGE",
        StatusCode.Unimplemented => "UNIMPLEMENTED",
        StatusCode.Internal => "INTERNAL",
        StatusCode.Unavailable => "UNAVAILABLE",
        StatusCode.DataLoss => "DATA_LOSS",
        StatusCode.Unauthenticated => "UNAUTHENTICATED",
        _ => ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    private static InstrumentAdvice<double> Buckets(params double[] bounds) => new() { HistogramBucketBoundaries = bounds };

    private static IEnumerable<Measurement<double>> LoadSeconds(ModelHost model) =>
        model.LoadTime is { } load ? [new Measurement<double>(load.TotalSeconds)] : [];

    private static IEnumerable<Measurement<int>> StateMeasurements(ModelState state)
    {
        foreach (string name in ModelStates)
        {
            bool current = name == state switch { ModelState.Ready => "ready", ModelState.Failed => "failed", _ => "loading" };
            yield return new Measurement<int>(current ? 1 : 0, new KeyValuePair<string, object?>("state", name));
        }
    }
}
