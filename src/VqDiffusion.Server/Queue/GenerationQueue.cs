using Microsoft.Extensions.Options;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Queue;

/// <summary>
/// The bounded queue in front of the model. Accepting a job posts its <see cref="QueuedEvent"/>; whenever a job
/// leaves the queue, the ones behind it get their new positions. The worker (<see cref="GenerationWorker"/>) takes
/// jobs with <see cref="TakeAsync"/> (the oldest, when nothing runs) and <see cref="TryTakeNext"/> (between steps,
/// by its fairness order). Limits: <c>Generation:MaxQueueLength</c> in all and <c>Generation:MaxQueuedPerCaller</c>
/// per caller. <see cref="Close"/> (shutdown) ends every waiting job and refuses new ones.
/// </summary>
public sealed class GenerationQueue
{
    private readonly LinkedList<Entry> _waiting = new();

    // At least as many permits as waiting jobs (a cancelled job leaves its permit behind; TakeAsync skips it).
    private readonly SemaphoreSlim _available = new(0);
    private readonly object _gate = new();
    private readonly int _capacity;
    private readonly int _maxPerCaller;
    private readonly ILogger<GenerationQueue> _logger;
    private bool _closed;

    public GenerationQueue(IOptions<GenerationOptions> options, ILogger<GenerationQueue> logger)
    {
        _capacity = Math.Max(1, options.Value.MaxQueueLength);
        _maxPerCaller = Math.Max(0, options.Value.MaxQueuedPerCaller);
        _logger = logger;
    }

    public int Capacity => _capacity;

    /// <summary>Requests one caller may have waiting; 0 = no per-caller limit.</summary>
    public int MaxQueuedPerCaller => _maxPerCaller;

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _waiting.Count;
            }
        }
    }

    /// <summary>
    /// Adds a job, or throws <see cref="QueueFullException"/> (a limit is reached) or
    /// <see cref="ServerShuttingDownException"/> (<see cref="Close"/> was called).
    /// </summary>
    public void Enqueue(GenerationJob job)
    {
        var entry = new Entry(job);
        lock (_gate)
        {
            if (_closed)
            {
                throw new ServerShuttingDownException();
            }

            if (_waiting.Count >= _capacity)
            {
                throw new QueueFullException(_capacity);
            }

            if (_maxPerCaller > 0 && _waiting.Count(e => e.Job.Caller == job.Caller) >= _maxPerCaller)
            {
                throw QueueFullException.ForCaller(job.Caller, _maxPerCaller);
            }

            entry.Node = _waiting.AddLast(entry);
            job.Post(new QueuedEvent(_waiting.Count, _waiting.Count));
            _logger.LogDebug("Request {RequestId} queued at position {Position} of {Capacity}", job.RequestId, _waiting.Count, _capacity);
        }

        CancellationTokenRegistration registration = job.CancellationToken.Register(() => Remove(entry));
        lock (_gate)
        {
            if (entry.Node is not null)
            {
                entry.Registration = registration;
                registration = default;
            }
        }

        // Already taken, removed or closed: the registration is no longer needed.
        registration.Unregister();
        _available.Release();
    }

    /// <summary>Waits for the oldest job that is not cancelled; throws <see cref="OperationCanceledException"/> once closed.</summary>
    public async Task<GenerationJob> TakeAsync(CancellationToken stoppingToken)
    {
        while (true)
        {
            await _available.WaitAsync(stoppingToken).ConfigureAwait(false);
            lock (_gate)
            {
                if (_closed)
                {
                    throw new OperationCanceledException("the queue is closed");
                }

                if (_waiting.First is { } first)
                {
                    Detach(first.Value);
                    AnnouncePositions();
                    return first.Value.Job;
                }
            }
        }
    }

    /// <summary>Takes the oldest waiting job without waiting; false when none is waiting.</summary>
    public bool TryTake([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out GenerationJob? job) => TryTakeNext(_ => 0, out job);

    /// <summary>
    /// Takes, without waiting, the waiting job with the lowest <paramref name="priority"/> (the oldest among equals);
    /// a job whose priority is null is passed over and keeps its place. False when no job may be taken now (or the
    /// queue is closed).
    /// </summary>
    public bool TryTakeNext(Func<GenerationJob, int?> priority, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out GenerationJob? job)
    {
        Entry? best = null;
        lock (_gate)
        {
            if (_closed)
            {
                job = null;
                return false;
            }

            int bestPriority = int.MaxValue;
            foreach (Entry entry in _waiting)
            {
                if (priority(entry.Job) is int p && (best is null || p < bestPriority))
                {
                    best = entry;
                    bestPriority = p;
                }
            }

            if (best is not null)
            {
                Detach(best);
                AnnouncePositions();
            }
        }

        if (best is null)
        {
            job = null;
            return false;
        }

        // Its permit (released by Enqueue, possibly not yet: then TakeAsync will skip an empty wake-up).
        _available.Wait(0);
        job = best.Job;
        return true;
    }

    /// <summary>
    /// Refuses new jobs from now on and ends every waiting one with <see cref="ServerShuttingDownException"/>
    /// (UNAVAILABLE); returns how many were waiting.
    /// </summary>
    public int Close()
    {
        List<Entry> ended;
        lock (_gate)
        {
            _closed = true;
            ended = [.. _waiting];
            foreach (Entry entry in ended)
            {
                Detach(entry);
            }
        }

        foreach (Entry entry in ended)
        {
            _logger.LogInformation("Request {RequestId} left the queue: the server is shutting down", entry.Job.RequestId);
            entry.Job.Complete(new ServerShuttingDownException());
        }

        return ended.Count;
    }

    private void Remove(Entry entry)
    {
        lock (_gate)
        {
            if (entry.Node is null)
            {
                return;
            }

            Detach(entry);
            _logger.LogInformation("Request {RequestId} left the queue: cancelled by the client", entry.Job.RequestId);
            entry.Job.Complete(new OperationCanceledException(entry.Job.CancellationToken));
            AnnouncePositions();
        }
    }

    /// <summary>Takes an entry out of the list and drops its cancellation registration (under the lock; never blocks).</summary>
    private void Detach(Entry entry)
    {
        if (entry.Node is { } node)
        {
            _waiting.Remove(node);
            entry.Node = null;
        }

        entry.Registration.Unregister();
        entry.Registration = default;
    }

    private void AnnouncePositions()
    {
        int position = 1;
        foreach (Entry waiting in _waiting)
        {
            waiting.Job.Post(new QueuedEvent(position++, _waiting.Count));
        }
    }

    /// <summary>A waiting job, its list node while it waits, and its cancellation registration.</summary>
    private sealed class Entry(GenerationJob job)
    {
        public GenerationJob Job { get; } = job;

        public LinkedListNode<Entry>? Node { get; set; }

        public CancellationTokenRegistration Registration { get; set; }
    }
}
