using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;
using EditOptions = VqDiffusion.Model.Pipelines.EditOptions;
using ImageFormat = VqDiffusion.Model.Imaging.ImageFormat;
using ProtoImageFormat = VqDiffusion.Grpc.V1.ImageFormat;
using SamplerOptions = VqDiffusion.Model.Pipelines.SamplerOptions;

namespace VqDiffusion.Server.Services;

/// <summary>
/// Turns a <see cref="GenerateRequest"/> into a validated <see cref="GenerationJob"/>, or an
/// INVALID_ARGUMENT status whose message names the field and the allowed range, with a
/// <c>google.rpc.BadRequest</c> field violation in the details.
/// </summary>
internal static class RequestMapper
{
    public const int MaxRequestIdLength = 128;

    public static GenerationJob CreateJob(GenerateRequest proto, VQDiffusionPipeline pipeline, GenerationOptions options, CancellationToken cancellationToken)
    {
        // Unset steps and guidance take the defaults of the request's sampler and mode (the pipeline's).
        GenerationRequest request;
        int totalSteps;
        try
        {
            request = pipeline.WithDefaults(new GenerationRequest
            {
                Prompts = proto.Prompts.ToArray(),
                NumInferenceSteps = proto.NumInferenceSteps == 0 ? null : proto.NumInferenceSteps,
                GuidanceScale = proto.HasGuidanceScale ? proto.GuidanceScale : null,
                TruncationRate = proto.HasTruncationRate ? proto.TruncationRate : GenerationRequest.DefaultTruncationRate,
                NumImagesPerPrompt = proto.NumImagesPerPrompt == 0 ? 1 : proto.NumImagesPerPrompt,
                Seed = proto.HasSeed ? proto.Seed : null,
                InitialLatents = proto.InitialLatents.Count == 0 ? null : proto.InitialLatents.Select(v => (long)v).ToArray(),
                Sampler = proto.Sampler is { } sampler ? ToModel(sampler) : null,
                Edit = proto.Edit is { } edit ? ToModel(edit) : null,
            });
            totalSteps = pipeline.PlannedTimesteps(request, options.ToLimits()).Count;
        }
        catch (GenerationArgumentException ex)
        {
            throw InvalidArgument(ex.Field, ex.Reason);
        }

        int steps = request.NumInferenceSteps!.Value;

        ImageFormat format = ParseFormat(proto.ImageFormat, "image_format");
        int quality = ParseQuality(proto.ImageQuality, "image_quality", options.DefaultImageQuality);

        SnapshotSettings snapshots = SnapshotSettings.None;
        if (proto.Snapshots is { } s)
        {
            bool wantsContent = s.IncludeTokens || s.IncludePreview;
            if (s.EveryNSteps < 0 || s.EveryNSteps > totalSteps || (wantsContent && s.EveryNSteps == 0))
            {
                string stepsName = totalSteps == steps ? "num_inference_steps" : "the request's steps";
                throw InvalidArgument("snapshots.every_n_steps",
                    $"snapshots.every_n_steps must be between {(wantsContent ? 1 : 0)} and {stepsName} ({totalSteps}){(wantsContent ? " when include_tokens or include_preview is set" : string.Empty)}, got {s.EveryNSteps}.");
            }

            snapshots = new SnapshotSettings(
                s.EveryNSteps,
                s.IncludeTokens,
                s.IncludePreview,
                ParseFormat(s.PreviewFormat, "snapshots.preview_format"),
                ParseQuality(s.PreviewQuality, "snapshots.preview_quality", options.DefaultImageQuality));
        }

        string requestId = proto.RequestId;
        if (requestId.Length == 0)
        {
            requestId = Guid.NewGuid().ToString("N")[..16];
        }
        else if (requestId.Length > MaxRequestIdLength || requestId.Any(c => c < 0x21 || c > 0x7e))
        {
            throw InvalidArgument("request_id", $"request_id must be 1 to {MaxRequestIdLength} printable ASCII characters without spaces.");
        }

        return new GenerationJob(requestId, request, format, quality, snapshots, cancellationToken, Math.Max(0, options.EventBufferBytes));
    }

    private static SamplerOptions ToModel(Grpc.V1.SamplerOptions proto) => new()
    {
        Kind = proto.Kind switch
        {
            Grpc.V1.SamplerKind.Unspecified or Grpc.V1.SamplerKind.Diffusers => Model.Pipelines.SamplerKind.Diffusers,
            Grpc.V1.SamplerKind.VqDiffusion => Model.Pipelines.SamplerKind.VQDiffusion,
            _ => throw InvalidArgument("sampler.kind", $"sampler.kind must be SAMPLER_KIND_DIFFUSERS or SAMPLER_KIND_VQ_DIFFUSION (or unspecified = diffusers), got {(int)proto.Kind}."),
        },
        Speed = proto.HasSpeed ? proto.Speed : SamplerOptions.DefaultSpeed,
        Prior = proto.Prior switch
        {
            Grpc.V1.UnmaskPrior.Unspecified or Grpc.V1.UnmaskPrior.None => Model.Pipelines.UnmaskPrior.None,
            Grpc.V1.UnmaskPrior.HighQuality => Model.Pipelines.UnmaskPrior.HighQuality,
            Grpc.V1.UnmaskPrior.Purity => Model.Pipelines.UnmaskPrior.Purity,
            _ => throw InvalidArgument("sampler.prior", $"sampler.prior must be UNMASK_PRIOR_NONE, UNMASK_PRIOR_HIGH_QUALITY or UNMASK_PRIOR_PURITY (or unspecified = none), got {(int)proto.Prior}."),
        },
        PriorWeight = proto.PriorWeight,
        UnmaskSchedule = proto.UnmaskSchedule.Count == 0 ? null : proto.UnmaskSchedule.ToArray(),
        ClassifierFreeEmbeddings = proto.ClassifierFreeEmbeddings switch
        {
            Grpc.V1.ClassifierFreeEmbeddings.Unspecified => Model.Pipelines.ClassifierFreeEmbeddings.ModelDefault,
            Grpc.V1.ClassifierFreeEmbeddings.Learned => Model.Pipelines.ClassifierFreeEmbeddings.Learned,
            Grpc.V1.ClassifierFreeEmbeddings.EmptyPrompt => Model.Pipelines.ClassifierFreeEmbeddings.EmptyPrompt,
            _ => throw InvalidArgument("sampler.classifier_free_embeddings",
                $"sampler.classifier_free_embeddings must be CLASSIFIER_FREE_EMBEDDINGS_LEARNED or CLASSIFIER_FREE_EMBEDDINGS_EMPTY_PROMPT (or unspecified = the model's), got {(int)proto.ClassifierFreeEmbeddings}."),
        },
    };

    private static EditOptions ToModel(Grpc.V1.EditOptions proto) => new()
    {
        SourceTokens = proto.SourceTokens.Count == 0 ? null : proto.SourceTokens.Select(v => (long)v).ToArray(),
        SourceImage = proto.SourceImage.IsEmpty ? null : Decode("edit.source_image", () => ImageEncoder.DecodeImage(proto.SourceImage.ToByteArray())),
        Strength = proto.HasStrength ? proto.Strength : null,
        Mask = proto.Mask.Count == 0 ? null : proto.Mask.ToArray(),
        MaskImage = proto.MaskImage.IsEmpty ? null : Decode("edit.mask_image", () => ImageEncoder.DecodeMask(proto.MaskImage.ToByteArray())),
    };

    private static T Decode<T>(string field, Func<T> decode)
    {
        try
        {
            return decode();
        }
        catch (ArgumentException)
        {
            throw InvalidArgument(field, $"{field} is not a decodable image (PNG, JPEG or WebP) of at most {ImageEncoder.MaxDecodePixels} pixels.");
        }
    }

    private static ImageFormat ParseFormat(ProtoImageFormat value, string field) => value switch
    {
        ProtoImageFormat.Unspecified or ProtoImageFormat.Png => ImageFormat.Png,
        ProtoImageFormat.Jpeg => ImageFormat.Jpeg,
        ProtoImageFormat.Webp => ImageFormat.WebP,
        _ => throw InvalidArgument(field, $"{field} must be IMAGE_FORMAT_PNG, IMAGE_FORMAT_JPEG or IMAGE_FORMAT_WEBP (or unspecified = PNG), got {(int)value}."),
    };

    private static int ParseQuality(int value, string field, int defaultQuality) => value switch
    {
        0 => defaultQuality,
        >= 1 and <= 100 => value,
        _ => throw InvalidArgument(field, $"{field} must be between 1 and 100 (0 = default {defaultQuality}), got {value}."),
    };

    public static ProtoImageFormat ToProto(ImageFormat format) => format switch
    {
        ImageFormat.Jpeg => ProtoImageFormat.Jpeg,
        ImageFormat.WebP => ProtoImageFormat.Webp,
        _ => ProtoImageFormat.Png,
    };

    /// <summary>INVALID_ARGUMENT with a google.rpc.BadRequest field violation.</summary>
    public static RpcException InvalidArgument(string field, string description)
    {
        var status = new Google.Rpc.Status
        {
            Code = (int)Code.InvalidArgument,
            Message = description,
            Details =
            {
                Any.Pack(new BadRequest
                {
                    FieldViolations = { new BadRequest.Types.FieldViolation { Field = field, Description = description } },
                }),
            },
        };
        return status.ToRpcException();
    }
}
