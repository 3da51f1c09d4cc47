using System.Diagnostics;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// One call of <c>vqdiffusion.v1.VqDiffusionService</c> as <see cref="CallTelemetryInterceptor"/> sees it: its
/// method, its span and the traces of the jobs it queued, which close with it. <see cref="Current"/> flows with
/// the call's execution context into the service.
/// </summary>
public sealed class CallTelemetry
{
    private static readonly AsyncLocal<CallTelemetry?> CurrentCall = new();

    private readonly List<GenerationTrace> _jobs = [];

    public CallTelemetry(string method, Activity? activity)
    {
        Method = method;
        Activity = activity;
    }

    /// <summary>The call being handled on this execution context, if any.</summary>
    public static CallTelemetry? Current
    {
        get => CurrentCall.Value;
        internal set => CurrentCall.Value = value;
    }

    public string Method { get; }

    /// <summary>The call's span (<c>Generate</c>, <c>GetModelInfo</c>); null when nobody listens.</summary>
    public Activity? Activity { get; }

    public void Add(GenerationTrace job)
    {
        lock (_jobs)
        {
            _jobs.Add(job);
        }
    }

    /// <summary>Stops what the call's jobs left open; <paramref name="error"/> is null when the call succeeded.</summary>
    public void CloseJobs(string? error)
    {
        lock (_jobs)
        {
            foreach (GenerationTrace job in _jobs)
            {
                job.Close(error);
            }

            _jobs.Clear();
        }
    }
}
