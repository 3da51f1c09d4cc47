using TorchSharp;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>Full pipeline runs against diffusers' own outputs: every step's tokens and the final pixels.</summary>
public sealed class VQDiffusionPipelineGoldenTests : IClassFixture<TinyPipelineFixture>
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly ITestOutputHelper _output;

    public VQDiffusionPipelineGoldenTests(TinyPipelineFixture fixture, ITestOutputHelper output)
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
    public void RunReproducesDiffusersStepByStepAndPixels(string name)
    {
        var run = GoldenPipelineRuns.All(Fixtures.TinyGolden).Single(r => r.Name == name);
        var golden = Fixtures.LoadGolden(run.File);
        long[] goldenTimesteps = golden["step_timesteps"].data<long>().ToArray();
        torch.Tensor goldenSamples = golden["step_samples"];
        int batch = run.Request.BatchSize;
        long pixels = goldenSamples.shape[2];

        var seenTimesteps = new List<long>();
        GenerationResult result = _pipeline.Generate(run.Request, step =>
        {
            seenTimesteps.Add(step.Timestep);
            long[] tokens = step.Tokens();
            long[] expected = goldenSamples[step.CompletedSteps - 1].data<long>().ToArray();
            int differing = tokens.Zip(expected).Count(p => p.First != p.Second);
            Assert.True(differing == 0, $"{name}: step {step.CompletedSteps - 1} (t={step.Timestep}): {differing} of {batch * pixels} tokens differ from diffusers");
        });

        Assert.Equal(goldenTimesteps, seenTimesteps);
        Assert.Equal(run.Request.Seed, result.Seed);
        Assert.Equal(batch, result.Images.Count);
        _output.WriteLine($"{name}: {goldenTimesteps.Length} steps x {batch} image(s): every step's tokens identical");

        byte[] expectedPixels = golden["images_uint8_nhwc"].data<byte>().ToArray();
        int size = expectedPixels.Length / batch;
        for (int b = 0; b < batch; b++)
        {
            GeneratedImage image = result.Images[b];
            Assert.Equal(b, image.Index);
            Assert.Equal(b / run.Request.NumImagesPerPrompt, image.PromptIndex);
            PixelAssert.WithinDecoderRounding(expectedPixels.AsSpan(b * size, size), image.Rgb, $"{name} image {b}", _output);

            // The PNG written for this image decodes to exactly these pixels (lossless).
            var decoded = ImageEncoder.DecodeRgb(ImageEncoder.Encode(image, ImageFormat.Png));
            Assert.Equal(image.Rgb, decoded.Rgb);
        }
    }

    [Fact]
    public void GoldenPngsAreTheGoldenPixels()
    {
        // Sanity check of the fixtures and of the PNG decoder the CLI tests rely on.
        foreach (var run in GoldenPipelineRuns.All(Fixtures.TinyGolden))
        {
            var golden = Fixtures.LoadGolden(run.File);
            byte[] pixels = golden["images_uint8_nhwc"].data<byte>().ToArray();
            int size = pixels.Length / run.Request.BatchSize;
            for (int b = 0; b < run.Request.BatchSize; b++)
            {
                var png = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "png", $"pipeline_{run.Name}_{b}.png")));
                Assert.Equal(pixels.AsSpan(b * size, size).ToArray(), png.Rgb);
            }
        }
    }
}
