using System.Diagnostics;
using Microsoft.Extensions.Options;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Runtime;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Telemetry;

namespace VqDiffusion.Server.Queue;

/// <summary>
/// Serves the queue on the <see cref="ModelThread"/>: keeps up to <c>Generation:MaxActiveRuns</c> runs active and
/// advances them one denoising step at a time in turn, admitting queued jobs between steps, so a short request
/// behind a long one starts within about one step and finishes first. Each run has its own generator, prompt
/// embeddings and sample, so its tokens and images are those of running it alone. Cancellation and deadlines
/// are checked before each of a run's steps; a run that fails ends alone. Between steps the next job is the waiting one
/// whose caller has the fewest active runs (the oldest among equals; none beyond <c>Generation:MaxActivePerCaller</c>).
/// On shutdown (<see cref="ServerShutdown"/>) nothing more is admitted, the runs in progress go on until they finish or
/// the drain timeout expires (their clients then get UNAVAILABLE at once), and then stop at their next step boundary; the worker holds a
/// <see cref="ModelHost.Use"/> lease while it serves, so no model object is disposed under a step.
/// </summary>
public sealed class GenerationWorker : BackgroundService
{
    private readonly GenerationQueue _queue;
    private readonly ModelHost _model;
    private readonly ModelThread _modelThread;
    private readonly ILogger<GenerationWorker> _logger;
    private readonly GenerationLimits _limits;
    private readonly int _maxActiveRuns;
    private readonly int _maxActivePerCaller;
    private readonly ServerShutdown _shutdown;
    private readonly bool _batchedForwards;
    private readonly int _maxForwardRows;
    private long _sharedForwards;
    private readonly IGenerationStepHook[] _hooks;
    private readonly GenerationTelemetry _telemetry;

    public GenerationWorker(
        GenerationQueue queue,
        ModelHost model,
        ModelThread modelThread,
        IOptions<GenerationOptions> options,
        ILogger<GenerationWorker> logger,
        IEnumerable<IGenerationStepHook> hooks,
        ServerShutdown shutdown,
        GenerationTelemetry telemetry)
    {
        _shutdown = shutdown;
        _telemetry = telemetry;
        _hooks = hooks.ToArray();
        _queue = queue;
        _model = model;
        _modelThread = modelThread;
        _logger = logger;
        _limits = options.Value.ToLimits();
        _maxActiveRuns = Math.Max(1, options.Value.MaxActiveRuns);
        _maxActivePerCaller = Math.Max(0, options.Value.MaxActivePerCaller);
        _batchedForwards = options.Value.BatchedForwards;
        _maxForwardRows = 2 * Math.Max(1, options.Value.MaxBatchSize);
    }

    /// <summary>Transformer forwards that served more than one run (<c>Generation:BatchedForwards</c>).</summary>
    public long SharedForwards => Interlocked.Read(ref _sharedForwards);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        VQDiffusionPipeline pipeline;
        try
        {
            pipeline = await _model.Loaded.WaitAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception)
        {
            return; // cancelled, or ModelHost logged the failure and requests get UNAVAILABLE.
        }

        try
        {
            await _modelThread.Post(() => Serve(pipeline, stoppingToken)).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // The model thread stopped with the host.
        }
    }

    private void Serve(VQDiffusionPipeline pipeline, CancellationToken stoppingToken)
    {
        using IDisposable? lease = _model.Use();
        if (lease is null)
        {
            return; // the host is going away
        }

        // Idle waits end when the host stops, the shutdown sequence begins or the model host goes away.
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, _shutdown.Stopping, _model.Stopping);
        var active = new List<ActiveRun>();
        int next = 0;
        try
        {
            while (!MustStop(stoppingToken))
            {
                _telemetry.ActiveRuns(active.Count);
                if (active.Count == 0)
                {
                    if (_shutdown.IsStopping)
                    {
                        return; // drained
                    }

                    GenerationJob job;
                    try
                    {
                        job = _queue.TakeAsync(idle.Token).GetAwaiter().GetResult();
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }

                    Admit(pipeline, job, active);
                    next = 0;
                    continue;
                }

                // Between two steps: admit what arrived, up to the limits (new runs go last in the turn); nothing once
                // the shutdown has begun.
                while (active.Count < _maxActiveRuns && !_shutdown.IsStopping && _queue.TryTakeNext(job => Priority(job, active), out GenerationJob? waiting))
                {
                    Admit(pipeline, waiting, active);
                }

                if (_batchedForwards && active.Count > 1)
                {
                    AdvanceTogether(active);
                    continue;
                }

                if (next >= active.Count)
                {
                    next = 0;
                }

                ActiveRun current = active[next];
                if (Advance(current))
                {
                    next++;
                }
                else
                {
                    current.Dispose();
                    active.RemoveAt(next);
                }
            }
        }
        finally
        {
            // Only at a step boundary: the runs still going when the drain timeout expired (or the host stopped).
            if (active.Count > 0)
            {
                _logger.LogWarning(
                    "Shutdown: stopping {ActiveRuns} run(s) in progress at this step boundary ({Reason})",
                    active.Count,
                    _shutdown.DrainExpired.IsCancellationRequested ? "Generation:DrainTimeout expired" : "the host stopped");
            }

            _telemetry.ActiveRuns(0);
            foreach (ActiveRun run in active)
            {
                _logger.LogInformation("Request {RequestId} stopped after {CompletedSteps}/{TotalSteps} steps: the server is shutting down", run.Job.RequestId, run.Run.CompletedSteps, run.Run.TotalSteps);
                run.Job.Complete(new ServerShuttingDownException(string.Create(
                    System.Globalization.CultureInfo.InvariantCulture,
                    $"the server is shutting down; the request was stopped after {run.Run.CompletedSteps} of {run.Run.TotalSteps} steps (Generation:DrainTimeout {_shutdown.DrainTimeout.TotalSeconds:F0} s)")));
                run.Dispose();
            }
        }
    }

    /// <summary>Whether the runs in progress must stop now: the drain timeout expired, or the host / model host stopped.</summary>
    private bool MustStop(CancellationToken stoppingToken) =>
        _shutdown.DrainExpired.IsCancellationRequested || stoppingToken.IsCancellationRequested || _model.Stopping.IsCancellationRequested;

    /// <summary>
    /// Fairness between callers: a waiting job's caller's active runs (fewest first), or null while its caller has
    /// <c>Generation:MaxActivePerCaller</c> runs going.
    /// </summary>
    private int? Priority(GenerationJob job, List<ActiveRun> active)
    {
        int running = 0;
        foreach (ActiveRun run in active)
        {
            if (run.Job.Caller == job.Caller)
            {
                running++;
            }
        }

        return _maxActivePerCaller > 0 && running >= _maxActivePerCaller ? null : running;
    }

    private void Admit(VQDiffusionPipeline pipeline, GenerationJob job, List<ActiveRun> active)
    {
        using var scope = _logger.BeginScope("RequestId:{RequestId}", job.RequestId);
        TimeSpan queueWait = job.SinceAccepted.Elapsed;
        _telemetry.LeftQueue(job, queueWait);
        if (job.CancellationToken.IsCancellationRequested)
        {
            _logger.LogInformation("Request {RequestId} was cancelled while queued ({QueueWaitMs:F0} ms)", job.RequestId, queueWait.TotalMilliseconds);
            job.Complete(new OperationCanceledException(job.CancellationToken));
            return;
        }

        var clock = Stopwatch.StartNew();
        GenerationRequest request = job.Request;
        try
        {
            DenoisingRun run = pipeline.Start(request, _limits);
            _telemetry.RunStarted(job, clock.Elapsed, run.TotalSteps, run.Seed);
            run.TrackPredictedX0 = job.Snapshots.IncludePreview;
            job.Post(new StartedEvent(run.Seed, run.Timesteps, queueWait));
            _logger.LogInformation(
                "Request {RequestId} started after {QueueWaitMs:F0} ms in queue ({ActiveRuns} active): {PromptCount} prompt(s) x {ImagesPerPrompt}, {Steps} steps, guidance {GuidanceScale}, truncation {TruncationRate}, seed {Seed}",
                job.RequestId, queueWait.TotalMilliseconds, active.Count + 1, request.Prompts.Count, request.NumImagesPerPrompt, request.NumInferenceSteps, request.GuidanceScale, request.TruncationRate, run.Seed);
            _shutdown.Started(job);
            active.Add(new ActiveRun(job, run, clock, queueWait, () => _shutdown.Left(job)));
        }
        catch (GenerationArgumentException ex)
        {
            // Validated before queueing; reaching here means the model changed under us.
            job.Complete(ex);
        }
        catch (Exception ex)
        {
            _logger.LogError(ex, "Request {RequestId} failed inside the model while starting", job.RequestId);
            job.Complete(new GenerationFailedException(job.RequestId, ex));
        }
    }

    /// <summary>One step of <paramref name="active"/> (or its end); false when the run has left the active set.</summary>
    private bool Advance(ActiveRun active)
    {
        using var scope = _logger.BeginScope("RequestId:{RequestId}", active.Job.RequestId);
        if (!BeforeStep(active))
        {
            return false;
        }

        long before = Stopwatch.GetTimestamp();
        StepContext step;
        try
        {
            step = active.Run.Step();
        }
        catch (Exception ex)
        {
            Fail(active, ex);
            return false;
        }

        return AfterStep(active, step, Stopwatch.GetElapsedTime(before));
    }

    /// <summary>
    /// One step of every active run with a single transformer forward (<c>Generation:BatchedForwards</c>); runs that
    /// are cancelled, fail or finish leave <paramref name="active"/>.
    /// </summary>
    private void AdvanceTogether(List<ActiveRun> active)
    {
        var ready = new List<ActiveRun>(active.Count);
        foreach (ActiveRun run in active.ToList())
        {
            using var scope = _logger.BeginScope("RequestId:{RequestId}", run.Job.RequestId);
            if (BeforeStep(run))
            {
                ready.Add(run);
            }
            else
            {
                active.Remove(run);
                run.Dispose();
            }
        }

        if (ready.Count == 0)
        {
            return;
        }

        // Groups of at most the rows of the largest single request (2 × MaxBatchSize with guidance), so that a
        // shared forward never needs more activation memory than one request may.
        var groups = new List<List<ActiveRun>>();
        int rows = 0;
        foreach (ActiveRun run in ready)
        {
            int runRows = run.Run.ForwardRows;
            if (groups.Count == 0 || rows + runRows > _maxForwardRows)
            {
                groups.Add([]);
                rows = 0;
            }

            groups[^1].Add(run);
            rows += runRows;
        }

        foreach (List<ActiveRun> group in groups)
        {
            long before = Stopwatch.GetTimestamp();
            var results = DenoisingRun.StepTogether(group.Select(r => r.Run).ToList());
            if (group.Count > 1)
            {
                Interlocked.Increment(ref _sharedForwards);
            }

            TimeSpan stepTime = Stopwatch.GetElapsedTime(before);
            for (int i = 0; i < group.Count; i++)
            {
                ActiveRun run = group[i];
                using var scope = _logger.BeginScope("RequestId:{RequestId}", run.Job.RequestId);
                bool keep = results[i] is { Step: { } step } ? AfterStep(run, step, stepTime) : Fail(run, results[i].Error!);
                if (!keep)
                {
                    active.Remove(run);
                    run.Dispose();
                }
            }
        }
    }

    /// <summary>Cancellation and the step hooks before a run's step; false (and the job completed) when it must stop.</summary>
    private bool BeforeStep(ActiveRun active)
    {
        GenerationJob job = active.Job;
        DenoisingRun run = active.Run;
        if (job.CancellationToken.IsCancellationRequested)
        {
            _logger.LogInformation("Request {RequestId} cancelled after {CompletedSteps}/{TotalSteps} steps", job.RequestId, run.CompletedSteps, run.TotalSteps);
            job.Complete(new OperationCanceledException(job.CancellationToken));
            return false;
        }

        try
        {
            foreach (IGenerationStepHook hook in _hooks)
            {
                hook.BeforeStep(job.RequestId, run.CompletedSteps, run.TotalSteps);
            }
        }
        catch (Exception ex)
        {
            return Fail(active, ex);
        }

        return true;
    }

    /// <summary>Posts a step's events and finishes a run that is done; false when the run has left the active set.</summary>
    private bool AfterStep(ActiveRun active, StepContext step, TimeSpan stepTime)
    {
        GenerationJob job = active.Job;
        try
        {
            active.StepsTotal += stepTime;
            _telemetry.StepCompleted(job, step.CompletedSteps, step.TotalSteps, step.Timestep, stepTime);
            _logger.LogDebug("Request {RequestId} step {CompletedSteps}/{TotalSteps} t={Timestep} in {StepMs:F1} ms", job.RequestId, step.CompletedSteps, step.TotalSteps, step.Timestep, stepTime.TotalMilliseconds);
            job.Post(new ProgressEvent(step.CompletedSteps, step.TotalSteps, step.Timestep, active.Clock.Elapsed));
            if (job.Snapshots.IsDue(step.CompletedSteps, step.TotalSteps))
            {
                PostSnapshots(job, step);
            }

            if (!active.Run.IsDone)
            {
                return true;
            }

            Finish(active);
            return false;
        }
        catch (Exception ex)
        {
            return Fail(active, ex);
        }
    }

    /// <summary>Ends a run that failed inside the model with INTERNAL (and the request id); always false.</summary>
    private bool Fail(ActiveRun active, Exception ex)
    {
        _logger.LogError(ex, "Request {RequestId} failed inside the model after {ElapsedMs:F0} ms", active.Job.RequestId, active.Clock.Elapsed.TotalMilliseconds);
        active.Job.Complete(new GenerationFailedException(active.Job.RequestId, ex));
        return false;
    }

    private void Finish(ActiveRun active)
    {
        GenerationJob job = active.Job;
        DenoisingRun run = active.Run;
        long decodeStart = Stopwatch.GetTimestamp();
        IReadOnlyList<GeneratedImage> images = run.Decode();
        string mime = ImageEncoder.MimeType(job.ImageFormat);
        var encoded = images.Select(image => new ImageEvent(
            image.Index, image.PromptIndex, ImageEncoder.Encode(image, job.ImageFormat, job.ImageQuality, GenerationParameters.For(run.Request, run.Seed, image, _model.Provenance)), mime, image.Width, image.Height, run.Seed)).ToList();
        TimeSpan decodeTime = Stopwatch.GetElapsedTime(decodeStart);
        _telemetry.Decoded(job, decodeTime, encoded.Count);
        foreach (ImageEvent image in encoded)
        {
            job.Post(image);
        }

        var completed = new CompletedEvent(active.QueueWait, active.Clock.Elapsed, active.StepsTotal / run.TotalSteps, decodeTime, encoded.Count);
        job.Post(completed);
        job.Complete();
        _logger.LogInformation(
            "Request {RequestId} completed: {ImageCount} image(s) in {TotalMs:F0} ms (queue {QueueWaitMs:F0} ms, mean step {MeanStepMs:F1} ms, decode+encode {DecodeMs:F0} ms)",
            job.RequestId, encoded.Count, active.Clock.Elapsed.TotalMilliseconds, active.QueueWait.TotalMilliseconds, completed.MeanStepTime.TotalMilliseconds, decodeTime.TotalMilliseconds);
    }

    private static void PostSnapshots(GenerationJob job, StepContext step)
    {
        SnapshotSettings s = job.Snapshots;
        long[] tokens = step.Tokens();
        int pixels = step.LatentHeight * step.LatentWidth;
        for (int i = 0; i < step.BatchSize; i++)
        {
            var row = new int[pixels];
            int masked = 0;
            for (int p = 0; p < pixels; p++)
            {
                row[p] = (int)tokens[(i * pixels) + p];
                if (row[p] == step.MaskClass)
                {
                    masked++;
                }
            }

            byte[]? preview = null;
            if (s.IncludePreview)
            {
                preview = ImageEncoder.Encode(step.Preview(i), s.PreviewFormat, s.PreviewQuality);
            }

            job.Post(new SnapshotEvent(
                step.CompletedSteps,
                step.Timestep,
                i,
                step.LatentHeight,
                step.LatentWidth,
                s.IncludeTokens ? row : null,
                masked,
                preview,
                s.IncludePreview ? ImageEncoder.MimeType(s.PreviewFormat) : null));
        }
    }

    /// <summary>A job being denoised: its run, clock and time spent in steps.</summary>
    private sealed class ActiveRun(GenerationJob job, DenoisingRun run, Stopwatch clock, TimeSpan queueWait, Action left) : IDisposable
    {
        public GenerationJob Job { get; } = job;

        public DenoisingRun Run { get; } = run;

        public Stopwatch Clock { get; } = clock;

        public TimeSpan QueueWait { get; } = queueWait;

        public TimeSpan StepsTotal { get; set; }

        public void Dispose()
        {
            Run.Dispose();
            left();
        }
    }
}
