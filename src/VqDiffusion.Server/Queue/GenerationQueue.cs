using Microsoft.Extensions.Options;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Queue;

/// <summary>
/// The bounded FIFO in front of the model. Accepting a job posts its <see cref="QueuedEvent"/>;
/// whenever a job leaves the queue, the ones behind it get their new positions. The worker
/// (<see cref="GenerationWorker"/>) takes jobs with <see cref="TakeAsync"/>.
/// </summary>
public sealed class GenerationQueue
{
    private readonly LinkedList<GenerationJob> _waiting = new();
    private readonly SemaphoreSlim _available = new(0);
    private readonly object _gate = new();
    private readonly int _capacity;
    private readonly ILogger<GenerationQueue> _logger;

    public GenerationQueue(IOptions<GenerationOptions> options, ILogger<GenerationQueue> logger)
    {
        _capacity = Math.Max(0, options.Value.MaxQueueLength);
        _logger = logger;
    }

    public int Capacity => _capacity;

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

    /// <summary>Adds a job or throws <see cref="QueueFullException"/>.</summary>
    public void Enqueue(GenerationJob job)
    {
        lock (_gate)
        {
            if (_waiting.Count >= _capacity)
            {
                throw new QueueFullException(_capacity);
            }

            _waiting.AddLast(job);
            job.Post(new QueuedEvent(_waiting.Count, _waiting.Count));
            _logger.LogDebug("Request {RequestId} queued at position {Position} of {Capacity}", job.RequestId, _waiting.Count, _capacity);
        }

        job.CancellationToken.Register(() => Remove(job));
        _available.Release();
    }

    /// <summary>Waits for the next job that is not cancelled.</summary>
    public async Task<GenerationJob> TakeAsync(CancellationToken stoppingToken)
    {
        while (true)
        {
            await _available.WaitAsync(stoppingToken).ConfigureAwait(false);
            lock (_gate)
            {
                if (_waiting.First is { } first)
                {
                    _waiting.RemoveFirst();
                    AnnouncePositions();
                    return first.Value;
                }
            }
        }
    }

    /// <summary>Takes the next waiting job without waiting; false when none is waiting.</summary>
    public bool TryTake([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out GenerationJob? job)
    {
        while (_available.Wait(0))
        {
            lock (_gate)
            {
                if (_waiting.First is { } first)
                {
                    _waiting.RemoveFirst();
                    AnnouncePositions();
                    job = first.Value;
                    return true;
                }
            }
        }

        job = null;
        return false;
    }

    private void Remove(GenerationJob job)
    {
        lock (_gate)
        {
            if (_waiting.Remove(job))
            {
                _logger.LogInformation("Request {RequestId} left the queue: cancelled by the client", job.RequestId);
                job.Complete(new OperationCanceledException(job.CancellationToken));
                AnnouncePositions();
            }
        }
    }

    private void AnnouncePositions()
    {
        int position = 1;
        foreach (GenerationJob waiting in _waiting)
        {
            waiting.Post(new QueuedEvent(position++, _waiting.Count));
        }
    }
}
