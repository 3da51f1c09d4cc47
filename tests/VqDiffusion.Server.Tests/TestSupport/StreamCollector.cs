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

        return proto;
    }
}
