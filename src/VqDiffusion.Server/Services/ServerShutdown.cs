using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Services;

/// <summary>
/// The shutdown sequence, started when the host begins to stop (SIGTERM, Ctrl+C, <c>StopApplication</c>) and before
/// any hosted service or Kestrel stops: new calls get UNAVAILABLE, queued requests end at once with UNAVAILABLE, runs
/// in progress may finish within <c>Generation:DrainTimeout</c>; then those still going end at once with UNAVAILABLE
/// and <see cref="DrainExpired"/> tells the worker to drop them at their next step boundary. The host's shutdown
/// timeout is the drain timeout plus <c>Generation:ShutdownMargin</c>, so the streams end with their status before
/// Kestrel closes connections.
/// </summary>
public sealed class ServerShutdown : IHostedService, IDisposable
{
    private readonly GenerationQueue _queue;
    private readonly ILogger<ServerShutdown> _logger;
    private readonly TimeSpan _drainTimeout;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _drainExpired = new();
    private readonly CancellationTokenRegistration _registration;
    private readonly CancellationTokenRegistration _drainRegistration;
    private readonly ConcurrentDictionary<GenerationJob, bool> _running = new();
    private int _started;

    public ServerShutdown(IHostApplicationLifetime lifetime, GenerationQueue queue, IOptions<GenerationOptions> options, ILogger<ServerShutdown> logger)
    {
        _queue = queue;
        _logger = logger;
        _drainTimeout = options.Value.DrainTimeout;
        _registration = lifetime.ApplicationStopping.Register(Begin);
        _drainRegistration = _drainExpired.Token.Register(EndRunningJobs);
    }

    /// <summary>True from the moment the host begins to stop: no request is admitted any more.</summary>
    public bool IsStopping => _stopping.IsCancellationRequested;

    /// <summary>Cancelled when the host begins to stop.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Cancelled <c>Generation:DrainTimeout</c> after the host began to stop: runs still going stop at their next step.</summary>
    public CancellationToken DrainExpired => _drainExpired.Token;

    public TimeSpan DrainTimeout => _drainTimeout;

    /// <summary>Starts the sequence (idempotent); the host calls it through <c>ApplicationStopping</c>.</summary>
    public void Begin()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            return;
        }

        try
        {
            _stopping.Cancel();
            int ended = _queue.Close();
            _logger.LogInformation(
                "Shutting down: new requests get UNAVAILABLE, {QueuedCount} queued request(s) ended; runs in progress may finish within {DrainTimeoutSeconds:F0} s (Generation:DrainTimeout), then stop at their next step",
                ended, _drainTimeout.TotalSeconds);
            _drainExpired.CancelAfter(_drainTimeout);
        }
        catch (ObjectDisposedException)
        {
            // Disposed with the host: nothing left to drain.
        }
    }

    /// <summary>The worker reports a job it started; one still running when the drain ends is ended by <see cref="EndRunningJobs"/>.</summary>
    public void Started(GenerationJob job) => _running.TryAdd(job, true);

    /// <summary>The worker reports a job that left its active set (finished, failed, cancelled or stopped).</summary>
    public void Left(GenerationJob job) => _running.TryRemove(job, out _);

    /// <summary>
    /// When the drain timeout expires, every job still running ends at once with UNAVAILABLE, so its client gets a
    /// status before Kestrel closes connections, however long the step in progress takes; the worker drops the run at
    /// its next step boundary, and model objects are disposed only after that.
    /// </summary>
    private void EndRunningJobs()
    {
        if (_running.IsEmpty)
        {
            return;
        }

        _logger.LogWarning(
            "Shutdown: Generation:DrainTimeout ({DrainTimeoutSeconds:F0} s) expired with {RunningCount} run(s) in progress: they end now with UNAVAILABLE and stop at their next step",
            _drainTimeout.TotalSeconds, _running.Count);
        foreach (GenerationJob job in _running.Keys)
        {
            job.Complete(new ServerShuttingDownException(string.Create(
                System.Globalization.CultureInfo.InvariantCulture,
                $"the server is shutting down; the request was stopped when Generation:DrainTimeout ({_drainTimeout.TotalSeconds:F0} s) expired")));
        }
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Begin(); // also when the host is stopped without ApplicationStopping (it always fires first; this is a backstop)
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        // Idempotent: registered twice (singleton and hosted service), so the container disposes it twice.
        _registration.Dispose();
        _drainRegistration.Dispose();
        _stopping.Dispose();
        _drainExpired.Dispose();
    }
}
