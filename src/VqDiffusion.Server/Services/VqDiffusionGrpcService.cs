using System.Reflection;
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
/// the worker's events to <see cref="GenerateResponse"/> messages. It never sees a tensor.
/// </summary>
internal sealed class VqDiffusionGrpcService : VqDiffusionService.VqDiffusionServiceBase
{
    public static readonly string ServerVersion =
        typeof(VqDiffusionGrpcService).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    private readonly ModelHost _model;
    private readonly GenerationQueue _queue;
    private readonly GenerationOptions _options;
    private readonly ILogger<VqDiffusionGrpcService> _logger;
    private readonly GenerationTelemetry _telemetry;

    public VqDiffusionGrpcService(ModelHost model, GenerationQueue queue, IOptions<GenerationOptions> options, ILogger<VqDiffusionGrpcService> logger, GenerationTelemetry telemetry)
    {
        _telemetry = telemetry;
        _model = model;
        _queue = queue;
        _options = options.Value;
        _logger = logger;
    }

    public override async Task Generate(GenerateRequest request, IServerStreamWriter<GenerateResponse> responseStream, ServerCallContext context)
    {
        VQDiffusionPipeline pipeline = RequireModel();
        GenerationJob job = RequestMapper.CreateJob(request, pipeline, _options, context.CancellationToken);
        using var scope = _logger.BeginScope("RequestId:{RequestId}", job.RequestId);
        _telemetry.Accepted(job);
        try
        {
            _queue.Enqueue(job);
        }
        catch (QueueFullException ex)
        {
            _logger.LogWarning("Request {RequestId} rejected: queue full ({Capacity} waiting)", job.RequestId, ex.Capacity);
            throw new RpcException(new Status(StatusCode.ResourceExhausted, ex.Message));
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
            throw new RpcException(new Status(StatusCode.Internal, ex.Message));
        }
    }

    public override Task<GetModelInfoResponse> GetModelInfo(GetModelInfoRequest request, ServerCallContext context)
    {
        VQDiffusionPipeline pipeline = RequireModel();
        var info = new GetModelInfoResponse
        {
            ModelId = Path.GetFileName(_model.ModelPath.TrimEnd(Path.DirectorySeparatorChar)),
            ModelPath = _model.ModelPath,
            IsBuiltinTestModel = _model.IsBuiltinTestModel,
            LatentHeight = pipeline.transformer.Height,
            LatentWidth = pipeline.transformer.Width,
            ImageHeight = pipeline.ImageHeight,
            ImageWidth = pipeline.ImageWidth,
            NumCodes = pipeline.transformer.NumVectorEmbeds - 1,
            NumVectorEmbeds = pipeline.transformer.NumVectorEmbeds,
            NumTrainTimesteps = pipeline.scheduler.NumTrainTimesteps,
            MaxPromptTokens = pipeline.tokenizer.ModelMaxLength,
            DefaultNumInferenceSteps = Math.Min(GenerationRequest.DefaultNumInferenceSteps, pipeline.scheduler.NumTrainTimesteps),
            DefaultGuidanceScale = GenerationRequest.DefaultGuidanceScale,
            DefaultTruncationRate = GenerationRequest.DefaultTruncationRate,
            Device = pipeline.Device.ToString(),
            Dtype = PipelineLoadOptions.DTypeName(pipeline.DType),
            ServerVersion = ServerVersion,
            LearnedClassifierFreeEmbeddings = pipeline.learned_classifier_free_sampling_embeddings.Learnable,
            Samplers = { pipeline.DescribeSamplers().Select(ToProto) },
            Limits = new ServerLimits
            {
                MaxPrompts = _options.MaxPrompts,
                MaxPromptCharacters = _options.MaxPromptCharacters,
                MaxImagesPerPrompt = _options.MaxImagesPerPrompt,
                MaxBatchSize = _options.MaxBatchSize,
                MaxGuidanceScale = _options.MaxGuidanceScale,
                MaxQueueLength = _queue.Capacity,
            },
        };
        return Task.FromResult(info);
    }

    private VQDiffusionPipeline RequireModel() => _model.State switch
    {
        ModelState.Ready => _model.Pipeline!,
        ModelState.Loading => throw new RpcException(new Status(StatusCode.Unavailable, "the model is still loading; retry when health reports SERVING")),
        _ => throw new RpcException(new Status(StatusCode.Unavailable, "the model failed to load: " + _model.FailureReason)),
    };

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
                Data = Google.Protobuf.ByteString.CopyFrom(i.Data),
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
            snapshot.Preview = Google.Protobuf.ByteString.CopyFrom(preview);
            snapshot.PreviewMimeType = s.PreviewMimeType ?? string.Empty;
        }

        return snapshot;
    }
}
