using System.Diagnostics;
using Microsoft.Extensions.Options;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Queue;

/// <summary>
/// Runs queued jobs on the model, one denoising step at a time, checking each job's cancellation
/// between steps. Everything a job needs is in its <see cref="DenoisingRun"/> (its own generator,
/// embeddings and sample), so the loop can later interleave or batch steps of several runs without
/// changing any request's images.
/// </summary>
public sealed class GenerationWorker : BackgroundService
{
    private readonly GenerationQueue _queue;
    private readonly ModelHost _model;
    private readonly ILogger<GenerationWorker> _logger;
    private readonly GenerationLimits _limits;

    public GenerationWorker(GenerationQueue queue, ModelHost model, IOptions<GenerationOptions> options, ILogger<GenerationWorker> logger)
    {
        _queue = queue;
        _model = model;
        _logger = logger;
        _limits = options.Value.ToLimits();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        VQDiffusionPipeline pipeline;
        try
        {
            pipeline = await _model.Loaded.WaitAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return; // ModelHost logged it; requests get UNAVAILABLE.
        }
        catch (OperationCanceledException)
        {
            return;
        }

        // Model work runs on a dedicated thread so it never blocks the thread pool serving gRPC I/O.
        var thread = new Thread(() => Run(pipeline, stoppingToken)) { IsBackground = true, Name = "vqd-generation" };
        thread.Start();
        await Task.Run(() => thread.Join(), CancellationToken.None).ConfigureAwait(false);
    }

    private void Run(VQDiffusionPipeline pipeline, CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            GenerationJob job;
            try
            {
                job = _queue.TakeAsync(stoppingToken).GetAwaiter().GetResult();
            }
            catch (OperationCanceledException)
            {
                return;
            }

            using (_logger.BeginScope("RequestId:{RequestId}", job.RequestId))
            {
                Process(pipeline, job);
            }
        }
    }

    internal void Process(VQDiffusionPipeline pipeline, GenerationJob job)
    {
        TimeSpan queueWait = job.SinceAccepted.Elapsed;
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
            using DenoisingRun run = pipeline.Start(request, _limits);
            job.Post(new StartedEvent(run.Seed, run.Timesteps, queueWait));
            _logger.LogInformation(
                "Request {RequestId} started after {QueueWaitMs:F0} ms in queue: {PromptCount} prompt(s) x {ImagesPerPrompt}, {Steps} steps, guidance {GuidanceScale}, truncation {TruncationRate}, seed {Seed}",
                job.RequestId, queueWait.TotalMilliseconds, request.Prompts.Count, request.NumImagesPerPrompt, request.NumInferenceSteps, request.GuidanceScale, request.TruncationRate, run.Seed);

            TimeSpan stepsTotal = TimeSpan.Zero;
            while (!run.IsDone)
            {
                if (job.CancellationToken.IsCancellationRequested)
                {
                    _logger.LogInformation("Request {RequestId} cancelled after {CompletedSteps}/{TotalSteps} steps", job.RequestId, run.CompletedSteps, run.TotalSteps);
                    job.Complete(new OperationCanceledException(job.CancellationToken));
                    return;
                }

                long before = Stopwatch.GetTimestamp();
                StepContext step = run.Step();
                TimeSpan stepTime = Stopwatch.GetElapsedTime(before);
                stepsTotal += stepTime;
                _logger.LogDebug("Request {RequestId} step {CompletedSteps}/{TotalSteps} t={Timestep} in {StepMs:F1} ms", job.RequestId, step.CompletedSteps, step.TotalSteps, step.Timestep, stepTime.TotalMilliseconds);
                job.Post(new ProgressEvent(step.CompletedSteps, step.TotalSteps, step.Timestep, clock.Elapsed));
                if (job.Snapshots.IsDue(step.CompletedSteps, step.TotalSteps))
                {
                    PostSnapshots(job, step);
                }
            }

            long decodeStart = Stopwatch.GetTimestamp();
            IReadOnlyList<GeneratedImage> images = run.Decode();
            string mime = ImageEncoder.MimeType(job.ImageFormat);
            var encoded = images.Select(image => new ImageEvent(
                image.Index, image.PromptIndex, ImageEncoder.Encode(image, job.ImageFormat, job.ImageQuality), mime, image.Width, image.Height, run.Seed)).ToList();
            TimeSpan decodeTime = Stopwatch.GetElapsedTime(decodeStart);
            foreach (ImageEvent image in encoded)
            {
                job.Post(image);
            }

            var completed = new CompletedEvent(queueWait, clock.Elapsed, stepsTotal / run.TotalSteps, decodeTime, encoded.Count);
            job.Post(completed);
            job.Complete();
            _logger.LogInformation(
                "Request {RequestId} completed: {ImageCount} image(s) in {TotalMs:F0} ms (queue {QueueWaitMs:F0} ms, mean step {MeanStepMs:F1} ms, decode+encode {DecodeMs:F0} ms)",
                job.RequestId, encoded.Count, clock.Elapsed.TotalMilliseconds, queueWait.TotalMilliseconds, completed.MeanStepTime.TotalMilliseconds, decodeTime.TotalMilliseconds);
        }
        catch (GenerationArgumentException ex)
        {
            // Validated before queueing; reaching here means the model changed under us.
            job.Complete(ex);
        }
        catch (Exception ex)
        {
            _logger.LogError(ex, "Request {RequestId} failed inside the model after {ElapsedMs:F0} ms", job.RequestId, clock.Elapsed.TotalMilliseconds);
            job.Complete(new GenerationFailedException(job.RequestId, ex));
        }
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
}
