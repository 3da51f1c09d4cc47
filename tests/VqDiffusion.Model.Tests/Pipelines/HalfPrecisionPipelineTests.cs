using TorchSharp;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>
/// float16 / bfloat16 loading: weights are converted on load and the pipeline runs end to end. Half
/// precision is not bit-exact (a discrete sampler amplifies 1e-3 differences), so this checks the first
/// step's tokens against diffusers' float32 run, which share the same Gumbel noise.
/// </summary>
public sealed class HalfPrecisionPipelineTests
{
    private readonly ITestOutputHelper _output;

    public HalfPrecisionPipelineTests(ITestOutputHelper output) => _output = output;

    [Theory]
    [InlineData(torch.ScalarType.Float16)]
    [InlineData(torch.ScalarType.BFloat16)]
    public void HalfPrecisionModelRunsAndFollowsTheFloat32Run(torch.ScalarType dtype)
    {
        using var pipeline = VQDiffusionPipeline.FromPretrained(Fixtures.TinyModel, new PipelineLoadOptions { DType = dtype });
        Assert.All(pipeline.transformer.parameters(), p => Assert.Equal(dtype, p.dtype));
        Assert.All(pipeline.vqvae.parameters(), p => Assert.Equal(dtype, p.dtype));

        var run = GoldenPipelineRuns.All(Fixtures.TinyGolden).Single(r => r.Name == "single_cfg");
        var golden = Fixtures.LoadGolden(run.File);
        long[] expectedFirst = golden["step_samples"][0].data<long>().ToArray();
        double firstStepAgreement = 0;
        GenerationResult result = pipeline.Generate(run.Request, step =>
        {
            if (step.CompletedSteps == 1)
            {
                long[] tokens = step.Tokens();
                firstStepAgreement = tokens.Zip(expectedFirst).Count(p => p.First == p.Second) / (double)tokens.Length;
            }
        });

        _output.WriteLine($"{dtype}: {firstStepAgreement:P1} of the first step's tokens equal diffusers' float32 run");
        Assert.True(firstStepAgreement >= 0.75, $"{dtype}: only {firstStepAgreement:P1} of the first step's tokens agree with float32");
        GeneratedImage image = Assert.Single(result.Images);
        Assert.Equal(32 * 32 * 3, image.Rgb.Length);
        Assert.True(image.Rgb.Distinct().Count() > 16, "the decoded image is degenerate");
    }
}
