using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;
using ImageFormat = VqDiffusion.Model.Imaging.ImageFormat;
using ProtoImageFormat = VqDiffusion.Grpc.V1.ImageFormat;

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
        int maxSteps = pipeline.scheduler.NumTrainTimesteps;
        int steps = proto.NumInferenceSteps == 0 ? Math.Min(GenerationRequest.DefaultNumInferenceSteps, maxSteps) : proto.NumInferenceSteps;
        var request = new GenerationRequest
        {
            Prompts = proto.Prompts.ToArray(),
            NumInferenceSteps = steps,
            GuidanceScale = proto.HasGuidanceScale ? proto.GuidanceScale : GenerationRequest.DefaultGuidanceScale,
            TruncationRate = proto.HasTruncationRate ? proto.TruncationRate : GenerationRequest.DefaultTruncationRate,
            NumImagesPerPrompt = proto.NumImagesPerPrompt == 0 ? 1 : proto.NumImagesPerPrompt,
            Seed = proto.HasSeed ? proto.Seed : null,
            InitialLatents = proto.InitialLatents.Count == 0 ? null : proto.InitialLatents.Select(v => (long)v).ToArray(),
        };

        try
        {
            pipeline.Validate(request, options.ToLimits());
        }
        catch (GenerationArgumentException ex)
        {
            throw InvalidArgument(ex.Field, ex.Reason);
        }

        ImageFormat format = ParseFormat(proto.ImageFormat, "image_format");
        int quality = ParseQuality(proto.ImageQuality, "image_quality", options.DefaultImageQuality);

        SnapshotSettings snapshots = SnapshotSettings.None;
        if (proto.Snapshots is { } s)
        {
            bool wantsContent = s.IncludeTokens || s.IncludePreview;
            if (s.EveryNSteps < 0 || s.EveryNSteps > steps || (wantsContent && s.EveryNSteps == 0))
            {
                throw InvalidArgument("snapshots.every_n_steps",
                    $"snapshots.every_n_steps must be between {(wantsContent ? 1 : 0)} and num_inference_steps ({steps}){(wantsContent ? " when include_tokens or include_preview is set" : string.Empty)}, got {s.EveryNSteps}.");
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

        return new GenerationJob(requestId, request, format, quality, snapshots, cancellationToken);
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
