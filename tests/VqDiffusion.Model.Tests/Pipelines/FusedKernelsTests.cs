using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>
/// The CPU kernels of a step (guidance mixed into the sliced log-softmax, the fused posterior and Gumbel-max) against
/// libtorch's unfused operations on the same tensors, through whole golden runs: the same tokens at every step and the
/// same pixels, so the kernels change nothing but the time.
/// </summary>
public sealed class FusedKernelsTests : IClassFixture<TinyPipelineFixture>
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly ITestOutputHelper _output;

    public FusedKernelsTests(TinyPipelineFixture fixture, ITestOutputHelper output)
    {
        _pipeline = fixture.Pipeline;
        _output = output;
    }

    public static TheoryData<string> RunNames()
    {
        var data = new TheoryData<string>();
        foreach (var run in GoldenPipelineRuns.All(Fixtures.TinyGolden))
        {
            data.Add(run.Name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(RunNames))]
    public void FusedAndUnfusedStepsSampleTheSameTokensAndPixels(string name)
    {
        GenerationRequest request = GoldenPipelineRuns.All(Fixtures.TinyGolden).Single(r => r.Name == name).Request;
        var (fusedTokens, fusedPixels) = Run(request, fused: true);
        var (plainTokens, plainPixels) = Run(request, fused: false);
        Assert.Equal(plainTokens.Count, fusedTokens.Count);
        for (int i = 0; i < plainTokens.Count; i++)
        {
            Assert.True(plainTokens[i].SequenceEqual(fusedTokens[i]), $"{name}: step {i}: tokens differ");
        }

        Assert.Equal(plainPixels, fusedPixels);
        _output.WriteLine($"{name}: {plainTokens.Count} steps identical with and without the fused kernels");
    }

    private (List<long[]> Tokens, byte[] Pixels) Run(GenerationRequest request, bool fused)
    {
        var tokens = new List<long[]>();
        _pipeline.scheduler.FusedPosterior = fused;
        try
        {
            using DenoisingRun run = _pipeline.Start(request);
            run.FusedGuidance = fused;
            while (!run.IsDone)
            {
                tokens.Add(run.Step().Tokens());
            }

            return (tokens, run.Decode().SelectMany(i => i.Rgb).ToArray());
        }
        finally
        {
            _pipeline.scheduler.FusedPosterior = true;
        }
    }
}
