using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

/// <summary>One source of truth for the limits: GenerationLimits.Default, counted in Unicode characters.</summary>
public sealed class LimitsTests
{
    private static string Emoji(int count) => string.Concat(Enumerable.Repeat("😀", count)); // 2 UTF-16 units each

    [Fact]
    public async Task AServerWithoutLimitSettingsReportsTheDefaultsOfGenerationLimits()
    {
        await using var server = await RunningServer.StartAsync(); // appsettings.json sets none of them
        GetModelInfoResponse info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        GenerationLimits limits = GenerationLimits.Default;
        Assert.Equal(
            (limits.MaxPrompts, limits.MaxPromptCharacters, limits.MaxImagesPerPrompt, limits.MaxBatchSize, limits.MaxGuidanceScale, new GenerationOptions().MaxQueueLength),
            (info.Limits.MaxPrompts, info.Limits.MaxPromptCharacters, info.Limits.MaxImagesPerPrompt, info.Limits.MaxBatchSize, info.Limits.MaxGuidanceScale, info.Limits.MaxQueueLength));
        Assert.Equal(2048, limits.MaxPromptCharacters);

        // A prompt of MaxPromptCharacters emoji (twice as many UTF-16 units) is accepted; one more is not.
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { Emoji(limits.MaxPromptCharacters) }, NumInferenceSteps = 1 }));
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, events[^1].EventCase);
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { Emoji(limits.MaxPromptCharacters + 1) }, NumInferenceSteps = 1 })));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("prompts[0] has 2049 characters; at most 2048 are allowed.", ex.Status.Detail);
    }

    [Fact]
    public async Task ConfiguredLimitsAreWhatRequestsAreCheckedAgainstAndWhatGetModelInfoReports()
    {
        await using var server = await RunningServer.StartAsync([$"--Model:Path={Model.Tests.TestSupport.Fixtures.TinyModel}", "--Generation:MaxPromptCharacters=3", "--Generation:MaxPrompts=2"]);
        GetModelInfoResponse info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.Equal((2, 3), (info.Limits.MaxPrompts, info.Limits.MaxPromptCharacters));
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "😀😀😀", "abc" }, NumInferenceSteps = 1 }));
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, events[^1].EventCase);
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "😀😀😀😀" }, NumInferenceSteps = 1 })));
        Assert.Equal("prompts[0] has 4 characters; at most 3 are allowed.", ex.Status.Detail);
        ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a", "b", "c" }, NumInferenceSteps = 1 })));
        Assert.Equal("prompts has 3 entries; at most 2 are allowed.", ex.Status.Detail);
    }
}
