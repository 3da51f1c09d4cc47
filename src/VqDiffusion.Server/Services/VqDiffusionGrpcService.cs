using System.Reflection;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Options;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Telemetry;

namespace VqDiffusion.Server.Services;

/// <summary>
/// The gRPC surface: validates requests, puts them in the <see cref="GenerationQueue"/> and maps
/// the worker's events to <see cref="GenerateResponse"/> messages. It never sees a tensor. Bound through
/// <see cref="VqDiffusionServiceBinding"/> (undecodable requests become INVALID_ARGUMENT); failures that escape are
/// mapped by <see cref="StatusInterceptor"/>.
/// </summary>
[BindServiceMethod(typeof(VqDiffusionServiceBinding), nameof(VqDiffusionServiceBinding.BindService))]
internal sealed class VqDiffusionGrpcService : VqDiffusionService.VqDiffusionServiceBase
{
    public static readonly string ServerVersion =
        typeof(VqDiffusionGrpcService).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    private readonly ModelHost _model;
    private readonly GenerationQueue _queue;
    private readonly GenerationOptions _options;
    private readonly ILogger<VqDiffusionGrpcService> _logger;
    private readonly ServerShutdown _shutdown;
    private readonly ICallerIdentity _callers;
    private readonly GenerationTelemetry _telemetry;

    public VqDiffusionGrpcService(
        ModelHost model,
        GenerationQueue queue,
        IOptions<GenerationOptions> options,
        ILogger<VqDiffusionGrpcService> logger,
        ServerShutdown shutdown,
        ICallerIdentity callers,
        GenerationTelemetry telemetry)
    {
        _telemetry = telemetry;
        _model = model;
        _queue = queue;
        _options = options.Value;
        _logger = logger;
        _shutdown = shutdown;
        _callers = callers;
    }

    public override async Task Generate(GenerateRequest request, IServerStreamWriter<GenerateResponse> responseStream, ServerCallContext context)
    {
        if (_shutdown.IsStopping)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, ServerShuttingDownException.DefaultMessage));
        }

        VQDiffusionPipeline pipeline = RequireModel();
        GenerationJob job = RequestMapper.CreateJob(request, pipeline, _options, context.CancellationToken);
        job.Caller = _callers.CallerOf(context);
        StatusInterceptor.SetRequestId(context, job.RequestId);
        using var scope = _logger.BeginScope("RequestId:{RequestId}", job.RequestId);
        _telemetry.Accepted(job);
        try
        {
            _queue.Enqueue(job);
        }
        catch (QueueFullException ex)
        {
            _logger.LogWarning("Request {RequestId} from {Caller} rejected: {Limit} ({Capacity}) reached", job.RequestId, job.Caller, ex.Limit, ex.Capacity);
            throw new RpcException(new Status(StatusCode.ResourceExhausted, ex.Message));
        }
        catch (ServerShuttingDownException ex)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, ex.Message));
        }

        _logger.LogInformation(
            "Request {RequestId} accepted from {Peer}: {PromptCount} prompt(s), {Steps} steps, {ImagesPerPrompt} image(s)/prompt, seed {Seed}, format {Format}",
            job.RequestId, context.Peer, job.Request.Prompts.Count, job.Request.NumInferenceSteps, job.Request.NumImagesPerPrompt,
            job.Request.Seed?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "random", job.ImageFormat);

        try
        {
            await foreach (GenerationEvent e in job.Events.ReadAllAsync(context.CancellationToken).ConfigureAwait(false))
            {
                await responseStream.WriteAsync(ToProto(job, e), context.CancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
            _logger.LogInformation("Request {RequestId} ended by the client (cancelled or deadline)", job.RequestId);
            throw new RpcException(new Status(StatusCode.Cancelled, "the call was cancelled"));
        }
        catch (GenerationArgumentException ex)
        {
            throw RequestMapper.InvalidArgument(ex.Field, ex.Reason);
        }
        catch (GenerationFailedException ex)
        {
            // The worker logged the details once; the client gets the request id, never the exception.
            throw new RpcException(new Status(ex.IsOutOfMemory ? StatusCode.ResourceExhausted : StatusCode.Internal, ex.Message));
        }
        catch (ServerShuttingDownException ex)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, ex.Message));
        }
        finally
        {
            if (job.DroppedEvents > 0)
            {
                _logger.LogInformation(
                    "Request {RequestId}: the client read slowly; {DroppedEvents} progress/snapshot event(s) were replaced by later ones (at most {PeakBufferedKiB} KiB buffered)",
                    job.RequestId, job.DroppedEvents, job.PeakBufferedBytes / 1024);
            }
            else
            {
                _logger.LogDebug("Request {RequestId}: at most {PeakBufferedKiB} KiB of events buffered", job.RequestId, job.PeakBufferedBytes / 1024);
            }
        }
    }

    public override Task<GetModelInfoResponse> GetModelInfo(GetModelInfoRequest request, ServerCallContext context)
    {
        PipelineInfo model = RequireModel().Info;
        GenerationLimits limits = _options.ToLimits(); // what requests are checked against
        var info = new GetModelInfoResponse
        {
            ModelId = _model.Provenance.Model, // the Hub id (org/name) or the folder name
            ModelPath = _model.ModelPath,
            IsBuiltinTestModel = _model.IsBuiltinTestModel,
            LatentHeight = model.LatentHeight,
            LatentWidth = model.LatentWidth,
            ImageHeight = model.ImageHeight,
            ImageWidth = model.ImageWidth,
            NumCodes = model.NumCodes,
            NumVectorEmbeds = model.NumVectorEmbeds,
            NumTrainTimesteps = model.NumTrainTimesteps,
            MaxPromptTokens = model.MaxPromptTokens,
            DefaultNumInferenceSteps = model.DefaultNumInferenceSteps,
            DefaultGuidanceScale = model.DefaultGuidanceScale,
            DefaultTruncationRate = model.DefaultTruncationRate,
            Device = model.Device,
            Dtype = model.DType,
            ServerVersion = ServerVersion,
            LearnedClassifierFreeEmbeddings = model.LearnedClassifierFreeEmbeddings,
            Samplers = { model.Samplers.Select(ToProto) },
            Limits = new ServerLimits
            {
                MaxPrompts = limits.MaxPrompts,
                MaxPromptCharacters = limits.MaxPromptCharacters,
                MaxImagesPerPrompt = limits.MaxImagesPerPrompt,
                MaxBatchSize = limits.MaxBatchSize,
                MaxGuidanceScale = limits.MaxGuidanceScale,
                MaxQueueLength = _queue.Capacity,
            },
        };
        return Task.FromResult(info);
    }

    /// <summary>The loaded pipeline, or UNAVAILABLE (the details of a load failure are in the server log, never in the status).</summary>
    private VQDiffusionPipeline RequireModel()
    {
        Task<VQDiffusionPipeline> loaded = _model.Loaded; // one read of the one published state
        return loaded.IsCompletedSuccessfully
            ? loaded.Result
            : throw new RpcException(new Status(StatusCode.Unavailable, loaded.IsCompleted ? ModelHost.FailedMessage : "the model is still loading; retry when health reports SERVING"));
    }

    private static GenerateResponse ToProto(GenerationJob job, GenerationEvent e) => e switch
    {
        Queue.QueuedEvent q => new GenerateResponse { Queued = new Grpc.V1.QueuedEvent { Position = q.Position, QueueLength = q.QueueLength } },
        Queue.StartedEvent s => new GenerateResponse { Started = ToProto(job, s) },
        Queue.ProgressEvent p => new GenerateResponse
        {
            Progress = new Grpc.V1.ProgressEvent
            {
                CompletedSteps = p.CompletedSteps,
                TotalSteps = p.TotalSteps,
                Timestep = p.Timestep,
                Elapsed = Duration.FromTimeSpan(p.Elapsed),
            },
        },
        Queue.SnapshotEvent s => new GenerateResponse { Snapshot = ToProto(s) },
        Queue.ImageEvent i => new GenerateResponse
        {
            Image = new Grpc.V1.ImageEvent
            {
                Index = i.Index,
                PromptIndex = i.PromptIndex,
                Data = UnsafeByteOperations.UnsafeWrap(i.Data), // the worker never touches the array again
                MimeType = i.MimeType,
                Width = i.Width,
                Height = i.Height,
                Seed = i.Seed,
            },
        },
        Queue.CompletedEvent c => new GenerateResponse
        {
            Completed = new Grpc.V1.CompletedEvent
            {
                QueueWait = Duration.FromTimeSpan(c.QueueWait),
                GenerationTime = Duration.FromTimeSpan(c.GenerationTime),
                MeanStepTime = Duration.FromTimeSpan(c.MeanStepTime),
                DecodeTime = Duration.FromTimeSpan(c.DecodeTime),
                NumImages = c.NumImages,
                DroppedEvents = c.DroppedEvents,
            },
        },
        _ => throw new InvalidOperationException($"unknown event {e.GetType().Name}"),
    };

    private static Grpc.V1.StartedEvent ToProto(GenerationJob job, Queue.StartedEvent s)
    {
        var started = new Grpc.V1.StartedEvent
        {
            RequestId = job.RequestId,
            Prompts = { job.Request.Prompts },
            NumInferenceSteps = job.Request.NumInferenceSteps.GetValueOrDefault(),
            GuidanceScale = job.Request.GuidanceScale.GetValueOrDefault(),
            TruncationRate = job.Request.TruncationRate,
            NumImagesPerPrompt = job.Request.NumImagesPerPrompt,
            Seed = s.Seed,
            Timesteps = { s.Timesteps },
            NumImages = job.Request.BatchSize,
            ImageFormat = RequestMapper.ToProto(job.ImageFormat),
            QueueWait = Duration.FromTimeSpan(s.QueueWait),
            Sampler = ToProto(job.Request.SamplerOrDefault.Kind),
            TotalSteps = s.Timesteps.Count,
            Speed = job.Request.SamplerOrDefault.Speed,
            Prior = ToProto(job.Request.SamplerOrDefault),
        };
        if (job.Request.Edit?.Strength is double strength)
        {
            started.EditStrength = strength;
        }

        return started;
    }

    private static Grpc.V1.SamplerKind ToProto(Model.Pipelines.SamplerKind kind) => kind switch
    {
        Model.Pipelines.SamplerKind.VQDiffusion => Grpc.V1.SamplerKind.VqDiffusion,
        _ => Grpc.V1.SamplerKind.Diffusers,
    };

    /// <summary>The prior in effect: a vq-diffusion speed below 1 without a prior is high-quality inference.</summary>
    private static Grpc.V1.UnmaskPrior ToProto(Model.Pipelines.SamplerOptions options) => options.Prior switch
    {
        Model.Pipelines.UnmaskPrior.Purity => Grpc.V1.UnmaskPrior.Purity,
        Model.Pipelines.UnmaskPrior.HighQuality => Grpc.V1.UnmaskPrior.HighQuality,
        _ when options.Kind == Model.Pipelines.SamplerKind.VQDiffusion && options.Speed < 1 => Grpc.V1.UnmaskPrior.HighQuality,
        _ => Grpc.V1.UnmaskPrior.None,
    };

    private static Grpc.V1.SamplerInfo ToProto(Model.Pipelines.SamplerInfo info) => new()
    {
        Kind = ToProto(info.Kind),
        Name = info.Name,
        IsDefault = info.IsDefault,
        Description = info.Description,
        MinSpeed = info.MinSpeed,
        MaxSpeed = info.MaxSpeed,
        Speeds = { info.Speeds.Select(s => new Grpc.V1.SpeedInfo { Speed = s.Speed, Mode = s.Mode, NetworkCalls = s.NetworkCalls, TokensPerCall = s.TokensPerCall }) },
        DefaultUnmaskSchedules = { info.DefaultUnmaskSchedules.Select(s => new Grpc.V1.UnmaskScheduleInfo { AppliesTo = s.AppliesTo, Counts = { s.Counts }, FitsLatentGrid = s.FitsLatentGrid }) },
    };

    private static Grpc.V1.SnapshotEvent ToProto(Queue.SnapshotEvent s)
    {
        var snapshot = new Grpc.V1.SnapshotEvent
        {
            CompletedSteps = s.CompletedSteps,
            Timestep = s.Timestep,
            ImageIndex = s.ImageIndex,
            Height = s.Height,
            Width = s.Width,
            MaskedCount = s.MaskedCount,
        };
        if (s.Tokens is { } tokens)
        {
            snapshot.Tokens.AddRange(tokens);
        }

        if (s.Preview is { } preview)
        {
            snapshot.Preview = UnsafeByteOperations.UnsafeWrap(preview);
            snapshot.PreviewMimeType = s.PreviewMimeType ?? string.Empty;
        }

        return snapshot;
    }
}
