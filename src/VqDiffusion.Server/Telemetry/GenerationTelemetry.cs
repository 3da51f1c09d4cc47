using System.Diagnostics;
using System.Runtime.CompilerServices;
using Grpc.Core;
using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// What the service, the queue's worker and the call interceptor report: each method is one call at an
/// instrumentation point, recording the metrics (<see cref="ServerMetrics"/>) and the job's spans
/// (<see cref="GenerationTrace"/>). Nothing here blocks: the model thread only records in memory.
/// </summary>
public sealed class GenerationTelemetry
{
    private const string ServiceName = "vqdiffusion.v1.VqDiffusionService";
    private static readonly string ServicePrefix = "/" + ServiceName + "/";

    private readonly ConditionalWeakTable<GenerationJob, GenerationTrace> _jobs = new();

    public GenerationTelemetry(ServerMetrics metrics)
    {
        Metrics = metrics;
    }

    public ServerMetrics Metrics { get; }

    /// <summary>A call of the VqDiffusion service starts (its span, child of the request's); null for other services.</summary>
    public CallTelemetry? StartCall(ServerCallContext context)
    {
        if (!context.Method.StartsWith(ServicePrefix, StringComparison.Ordinal))
        {
            return null;
        }

        string method = context.Method[ServicePrefix.Length..];
        ActivityContext parent = default;
        if (Activity.Current is null && context.RequestHeaders.GetValue("traceparent") is { } traceParent)
        {
            // Hosting normally made the request activity from traceparent already; this covers a host that did not.
            _ = ActivityContext.TryParse(traceParent, context.RequestHeaders.GetValue("tracestate"), isRemote: true, out parent);
        }

        Activity? activity = ServerTracing.Source.StartActivity(method, ActivityKind.Internal, parent);
        activity?.SetTag("rpc.system", "grpc");
        activity?.SetTag("rpc.service", ServiceName);
        activity?.SetTag("rpc.method", method);
        var call = new CallTelemetry(method, activity);
        CallTelemetry.Current = call;
        return call;
    }

    /// <summary>The call has ended with <paramref name="error"/> (null: the handler returned).</summary>
    public void EndCall(CallTelemetry call, ServerCallContext context, Exception? error)
    {
        (StatusCode code, string? detail) = FinalStatus(context, error);
        Metrics.CallEnded(call.Method, code);
        string? failure = code == StatusCode.OK ? null : ServerMetrics.StatusCodeName(code) + (detail is { Length: > 0 } ? ": " + detail : string.Empty);
        call.CloseJobs(failure);
        if (call.Activity is { } activity)
        {
            activity.SetTag("rpc.grpc.status_code", (int)code);
            if (failure is not null)
            {
                activity.SetStatus(ActivityStatusCode.Error, failure);
            }

            activity.Stop();
        }
    }

    /// <summary>The service accepted <paramref name="job"/> and is about to queue it (call it before the worker can see the job).</summary>
    public void Accepted(GenerationJob job)
    {
        CallTelemetry? call = CallTelemetry.Current;
        var trace = new GenerationTrace(call?.Activity?.Context ?? default, job.RequestId);
        call?.Activity?.SetTag("vqd.request_id", job.RequestId);
        _jobs.AddOrUpdate(job, trace);
        call?.Add(trace);
        trace.Queued();
    }

    /// <summary>The worker admits <paramref name="job"/> after <paramref name="queueWait"/> in the queue.</summary>
    public void LeftQueue(GenerationJob job, TimeSpan queueWait)
    {
        Metrics.LeftQueue(queueWait);
        Trace(job).LeftQueue(queueWait);
    }

    /// <summary>The run has started: prompts encoded and the initial sample made in <paramref name="encodeTime"/>.</summary>
    public void RunStarted(GenerationJob job, TimeSpan encodeTime, int totalSteps, ulong seed) =>
        Trace(job).RunStarted(encodeTime, job.Request.Prompts.Count, job.Request.BatchSize, totalSteps, seed);

    /// <summary>One denoising step of <paramref name="job"/> took <paramref name="stepTime"/> (before its progress event is posted).</summary>
    public void StepCompleted(GenerationJob job, int completedSteps, int totalSteps, long timestep, TimeSpan stepTime)
    {
        Metrics.StepCompleted(stepTime);
        GenerationTrace trace = Trace(job);
        if (trace.TakeFirstProgress())
        {
            Metrics.FirstProgress(job.SinceAccepted.Elapsed);
        }

        trace.StepCompleted(completedSteps, totalSteps, timestep, stepTime);
    }

    /// <summary><paramref name="images"/> images were decoded and encoded in <paramref name="decodeTime"/> (before they are posted).</summary>
    public void Decoded(GenerationJob job, TimeSpan decodeTime, int images)
    {
        Metrics.Decoded(decodeTime, images);
        Trace(job).Decoded(decodeTime, images);
    }

    /// <summary>Runs being denoised now (the worker reports it between steps).</summary>
    public void ActiveRuns(int count) => Metrics.SetActiveRuns(count);

    private GenerationTrace Trace(GenerationJob job) => _jobs.GetValue(job, j => new GenerationTrace(default, j.RequestId));

    private static (StatusCode Code, string? Detail) FinalStatus(ServerCallContext context, Exception? error)
    {
        StatusCode code;
        string? detail;
        switch (error)
        {
            case null:
                code = context.Status.StatusCode;
                detail = context.Status.Detail;
                break;
            case RpcException rpc:
                code = rpc.StatusCode;
                detail = rpc.Status.Detail;
                break;
            case OperationCanceledException when context.CancellationToken.IsCancellationRequested:
                code = StatusCode.Cancelled;
                detail = "the call was cancelled";
                break;
            default:
                // What grpc-dotnet sends for an exception that is not an RpcException.
                code = StatusCode.Unknown;
                detail = error.GetType().Name;
                break;
        }

        // grpc-dotnet ends a call whose deadline passed with DEADLINE_EXCEEDED, whatever the handler throws then.
        if (code == StatusCode.Cancelled && context.Deadline <= DateTime.UtcNow)
        {
            code = StatusCode.DeadlineExceeded;
        }

        return (code, detail);
    }
}
