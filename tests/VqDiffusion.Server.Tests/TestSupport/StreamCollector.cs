using Grpc.Core;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Server.Tests.TestSupport;

public static class StreamCollector
{
    /// <summary>Reads a Generate stream to its end.</summary>
    public static async Task<List<GenerateResponse>> ReadAllAsync(AsyncServerStreamingCall<GenerateResponse> call, CancellationToken cancellationToken = default)
    {
        var events = new List<GenerateResponse>();
        await foreach (GenerateResponse e in call.ResponseStream.ReadAllAsync(cancellationToken))
        {
            events.Add(e);
        }

        return events;
    }

    public static GenerateRequest ToProto(Model.Pipelines.GenerationRequest r)
    {
        var proto = new GenerateRequest
        {
            NumInferenceSteps = r.NumInferenceSteps ?? 0,
            TruncationRate = r.TruncationRate,
            NumImagesPerPrompt = r.NumImagesPerPrompt,
        };
        proto.Prompts.AddRange(r.Prompts);
        if (r.GuidanceScale is { } guidance)
        {
            proto.GuidanceScale = guidance;
        }

        if (r.Seed is { } seed)
        {
            proto.Seed = seed;
        }

        if (r.InitialLatents is { } latents)
        {
            proto.InitialLatents.AddRange(latents.Select(v => (int)v));
        }

        if (r.Sampler is { } sampler)
        {
            proto.Sampler = new SamplerOptions
            {
                Kind = sampler.Kind == Model.Pipelines.SamplerKind.VQDiffusion ? SamplerKind.VqDiffusion : SamplerKind.Diffusers,
                Prior = sampler.Prior switch
                {
                    Model.Pipelines.UnmaskPrior.HighQuality => UnmaskPrior.HighQuality,
                    Model.Pipelines.UnmaskPrior.Purity => UnmaskPrior.Purity,
                    _ => UnmaskPrior.Unspecified,
                },
                PriorWeight = sampler.PriorWeight,
                ClassifierFreeEmbeddings = sampler.ClassifierFreeEmbeddings switch
                {
                    Model.Pipelines.ClassifierFreeEmbeddings.Learned => ClassifierFreeEmbeddings.Learned,
                    Model.Pipelines.ClassifierFreeEmbeddings.EmptyPrompt => ClassifierFreeEmbeddings.EmptyPrompt,
                    _ => ClassifierFreeEmbeddings.Unspecified,
                },
            };
            if (sampler.Speed != Model.Pipelines.SamplerOptions.DefaultSpeed)
            {
                proto.Sampler.Speed = sampler.Speed;
            }

            if (sampler.UnmaskSchedule is { } schedule)
            {
                proto.Sampler.UnmaskSchedule.AddRange(schedule);
            }
        }

        if (r.Edit is { } edit)
        {
            proto.Edit = new EditOptions();
            if (edit.SourceTokens is { } tokens)
            {
                proto.Edit.SourceTokens.AddRange(tokens.Select(v => (int)v));
            }

            if (edit.Strength is { } strength)
            {
                proto.Edit.Strength = strength;
            }

            if (edit.Mask is { } mask)
            {
                proto.Edit.Mask.AddRange(mask);
            }
        }

        return proto;
    }
}
