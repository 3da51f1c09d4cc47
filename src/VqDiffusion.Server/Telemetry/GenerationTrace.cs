using System.Diagnostics;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// The spans of one job under its call's span: <c>queue</c> (open from acceptance to admission), <c>encode</c>
/// (text encoding and the start of the run, recorded when it is done), <c>denoise</c> (open from the start to the
/// last step, one <c>step</c> event per step) and <c>decode</c>. The worker (model thread) and the call's end
/// (request thread) both touch it, so every change holds a short lock; once the call has ended
/// (<see cref="Close"/>), the spans still open are stopped and later calls change nothing.
/// </summary>
public sealed class GenerationTrace
{
    private readonly object _gate = new();
    private readonly ActivityContext _parent;
    private readonly string _requestId;
    private Activity? _queue;
    private Activity? _denoise;
    private bool _closed;
    private bool _progressSeen;

    public GenerationTrace(ActivityContext parent, string requestId)
    {
        _parent = parent;
        _requestId = requestId;
    }

    private bool Traced => _parent != default;

    /// <summary>True once, for the first step reported: the time to first progress is recorded then.</summary>
    public bool TakeFirstProgress()
    {
        lock (_gate)
        {
            bool first = !_progressSeen;
            _progressSeen = true;
            return first;
        }
    }

    public void Queued()
    {
        if (!Traced)
        {
            return;
        }

        lock (_gate)
        {
            if (!_closed)
            {
                _queue = ServerTracing.StartDetached("queue", _parent);
                _queue?.SetTag("vqd.request_id", _requestId);
            }
        }
    }

    public void LeftQueue(TimeSpan queueWait)
    {
        if (!Traced)
        {
            return;
        }

        lock (_gate)
        {
            if (_queue is { } queue)
            {
                queue.SetTag("vqd.queue_wait_ms", queueWait.TotalMilliseconds);
                ServerTracing.StopDetached(queue);
                _queue = null;
            }
        }
    }

    public void RunStarted(TimeSpan encodeTime, int prompts, int images, int steps, ulong seed)
    {
        if (!Traced)
        {
            return;
        }

        lock (_gate)
        {
            if (_closed)
            {
                return;
            }

            ServerTracing.RecordCompleted("encode", _parent, encodeTime, ("vqd.request_id", _requestId), ("vqd.prompts", prompts), ("vqd.images", images));
            _denoise = ServerTracing.StartDetached("denoise", _parent);
            _denoise?.SetTag("vqd.request_id", _requestId);
            _denoise?.SetTag("vqd.steps", steps);
            _denoise?.SetTag("vqd.seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    public void StepCompleted(int completedSteps, int totalSteps, long timestep, TimeSpan stepTime)
    {
        if (!Traced)
        {
            return;
        }

        lock (_gate)
        {
            if (_denoise is { IsAllDataRequested: true } denoise)
            {
                denoise.AddEvent(new ActivityEvent("step", tags: new ActivityTagsCollection
                {
                    ["vqd.step"] = completedSteps,
                    ["vqd.total_steps"] = totalSteps,
                    ["vqd.timestep"] = timestep,
                    ["vqd.step_ms"] = stepTime.TotalMilliseconds,
                }));
            }
        }
    }

    public void Decoded(TimeSpan decodeTime, int images)
    {
        if (!Traced)
        {
            return;
        }

        lock (_gate)
        {
            if (_closed)
            {
                return;
            }

            ServerTracing.StopDetached(_denoise, decodeTime);
            _denoise = null;
            ServerTracing.RecordCompleted("decode", _parent, decodeTime, ("vqd.request_id", _requestId), ("vqd.images", images));
        }
    }

    /// <summary>The call has ended with <paramref name="error"/> (null = OK): spans still open stop now.</summary>
    public void Close(string? error)
    {
        lock (_gate)
        {
            _closed = true;
            foreach (Activity? open in new[] { _queue, _denoise })
            {
                if (open is null)
                {
                    continue;
                }

                if (error is not null)
                {
                    open.SetStatus(ActivityStatusCode.Error, error);
                }

                ServerTracing.StopDetached(open);
            }

            _queue = null;
            _denoise = null;
        }
    }
}
