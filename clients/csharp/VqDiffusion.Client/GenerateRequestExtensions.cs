using Google.Protobuf;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Client;

/// <summary>
/// Fluent helpers for the sampler and edit options of a <see cref="GenerateRequest"/> (the flags of
/// <c>vqd generate</c>: <c>--sampler</c>, <c>--speed</c>, <c>--prior</c>, <c>--prior-weight</c>,
/// <c>--unmask-schedule</c>, <c>--edit-tokens</c>, <c>--edit-image</c>, <c>--strength</c>, <c>--mask</c>).
/// </summary>
public static class GenerateRequestExtensions
{
    /// <summary>
    /// The original VQ-Diffusion samplers: <paramref name="speed"/> 1 = every timestep, ≥ 2 = fast inference, &lt; 1 =
    /// high-quality inference; <paramref name="prior"/> and its <paramref name="priorWeight"/>; an explicit
    /// <paramref name="unmaskSchedule"/> (tokens per timestep, index = t).
    /// </summary>
    public static GenerateRequest WithVqDiffusion(
        this GenerateRequest request,
        double? speed = null,
        UnmaskPrior prior = UnmaskPrior.Unspecified,
        double priorWeight = 0,
        IEnumerable<int>? unmaskSchedule = null,
        ClassifierFreeEmbeddings classifierFreeEmbeddings = ClassifierFreeEmbeddings.Unspecified)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Sampler = new SamplerOptions { Kind = SamplerKind.VqDiffusion, Prior = prior, PriorWeight = priorWeight, ClassifierFreeEmbeddings = classifierFreeEmbeddings };
        if (speed is { } s)
        {
            request.Sampler.Speed = s;
        }

        if (unmaskSchedule is not null)
        {
            request.Sampler.UnmaskSchedule.AddRange(unmaskSchedule);
        }

        return request;
    }

    /// <summary>Edits token grids ([images × H × W], prompt-major), noised by <paramref name="strength"/> when given.</summary>
    public static GenerateRequest WithEditTokens(this GenerateRequest request, IEnumerable<int> sourceTokens, double? strength = null)
    {
        EditOptions edit = Edit(request, strength);
        edit.SourceTokens.Clear();
        edit.SourceTokens.AddRange(sourceTokens);
        return request;
    }

    /// <summary>Edits an encoded image (PNG, JPEG, WebP of the output size), noised by <paramref name="strength"/> when given.</summary>
    public static GenerateRequest WithEditImage(this GenerateRequest request, byte[] sourceImage, double? strength = null)
    {
        Edit(request, strength).SourceImage = ByteString.CopyFrom(sourceImage);
        return request;
    }

    /// <summary>Regenerates the tokens where <paramref name="mask"/> (H × W) is true; the others stay the source's.</summary>
    public static GenerateRequest WithMask(this GenerateRequest request, IEnumerable<bool> mask)
    {
        EditOptions edit = Edit(request, null);
        edit.Mask.Clear();
        edit.Mask.AddRange(mask);
        return request;
    }

    /// <summary>Regenerates the tokens under the white pixels of an image-space mask (PNG of the output size).</summary>
    public static GenerateRequest WithMaskImage(this GenerateRequest request, byte[] maskImage)
    {
        Edit(request, null).MaskImage = ByteString.CopyFrom(maskImage);
        return request;
    }

    private static EditOptions Edit(GenerateRequest request, double? strength)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Edit ??= new EditOptions();
        if (strength is { } s)
        {
            request.Edit.Strength = s;
        }

        return request.Edit;
    }
}
