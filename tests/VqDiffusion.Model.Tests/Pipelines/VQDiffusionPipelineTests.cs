using TorchSharp;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

public sealed class VQDiffusionPipelineTests : IClassFixture<TinyPipelineFixture>
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly ITestOutputHelper _output;

    public VQDiffusionPipelineTests(TinyPipelineFixture fixture, ITestOutputHelper output)
    {
        _pipeline = fixture.Pipeline;
        _output = output;
    }

    private static GenerationRequest Valid => new() { Prompts = ["a photo of a cat"], NumInferenceSteps = 3, Seed = 1 };

    [Fact]
    public void WarmUpLeavesTheWholeTransformerToTheRequests()
    {
        using var pipeline = VQDiffusionPipeline.FromPretrained(Fixtures.TinyModel);
        var run = GoldenPipelineRuns.All(Fixtures.TinyGolden).First();
        long[] expected = Fixtures.LoadGolden(run.File)["step_samples"][-1].data<long>().ToArray();

        GenerationResult warm = pipeline.WarmUp();

        Assert.Single(warm.Images);
        Assert.Equal(int.MaxValue, pipeline.transformer.BlocksToRun);
        long[]? last = null;
        pipeline.Generate(run.Request, step => last = step.Tokens());
        Assert.Equal(expected, last);
    }

    [Fact]
    public void EncodePromptWithGuidanceMatchesDiffusers()
    {
        var golden = Fixtures.LoadGolden("text_encoder.safetensors");
        using var actual = _pipeline.EncodePrompt(["a photo of a cat", "teddy bear playing in the pool"], 2, true);
        TensorAssert.Close(golden["encode_prompt_cfg_2prompts_x2"], actual, 2e-5, 1e-4, "encode_prompt_cfg_2prompts_x2", _output);
    }

    [Fact]
    public void EncodePromptWithoutGuidanceMatchesDiffusers()
    {
        var golden = Fixtures.LoadGolden("text_encoder.safetensors");
        using var actual = _pipeline.EncodePrompt(["a photo of a cat"], 1, false);
        TensorAssert.Close(golden["encode_prompt_nocfg_1prompt"], actual, 2e-5, 1e-4, "encode_prompt_nocfg_1prompt", _output);
    }

    [Theory]
    [InlineData("1.0", 1.0f)]
    [InlineData("0.9", 0.9f)]
    [InlineData("0.5", 0.5f)]
    [InlineData("0.0001", 0.0001f)]
    public void TruncateMatchesDiffusers(string name, float rate)
    {
        var golden = Fixtures.LoadGolden("truncate.safetensors");
        torch.Tensor input = golden["log_p_x_0"];
        using var truncated = VQDiffusionPipeline.Truncate(input, rate);
        using var clamped = truncated.clamp(min: -70);

        // Finite entries are bit-identical copies of the input.
        using var kept = truncated.isfinite();
        AssertBitIdentical(input.masked_select(kept), truncated.masked_select(kept), $"truncated_{name} kept values");

        // The -inf pattern equals diffusers', except for near-ties: classes whose keep decision
        // compares a float32 cumulative probability that lies within a few ulps of the rate. There the
        // last bit of exp()/cumsum differs between libtorch builds (measured: torch 1.13 vs libtorch
        // 2.10 on 36 of 12288 values at rate 1.0, 0 at the other rates).
        var (nearTies, mismatches) = CompareDropPattern(input, golden[$"truncated_{name}"], truncated, rate);
        _output.WriteLine($"truncate {name}: {mismatches} of {input.numel()} keep/drop decisions differ from diffusers, all near-ties within 2.5e-7 of the rate: {nearTies == mismatches}");
        Assert.Equal(mismatches, nearTies);
        Assert.True(mismatches < input.numel() * 0.005, $"{mismatches} near-tie differences is too many");

        // Clamping afterwards is exact wherever the decisions agree.
        using var same = truncated.isneginf().eq(golden[$"truncated_{name}"].isneginf());
        AssertBitIdentical(golden[$"truncated_clamped_{name}"].masked_select(same), clamped.masked_select(same), $"truncated_clamped_{name}");
    }

    private static (int NearTies, int Mismatches) CompareDropPattern(torch.Tensor input, torch.Tensor expected, torch.Tensor actual, float rate)
    {
        long batch = input.shape[0];
        long classes = input.shape[1];
        long pixels = input.shape[2];
        float[] x = input.contiguous().data<float>().ToArray();
        bool[] expectedDrop = expected.isneginf().contiguous().data<bool>().ToArray();
        bool[] actualDrop = actual.isneginf().contiguous().data<bool>().ToArray();
        int mismatches = 0;
        int nearTies = 0;
        for (long b = 0; b < batch; b++)
        {
            for (long n = 0; n < pixels; n++)
            {
                long Index(long k) => (b * classes * pixels) + (k * pixels) + n;
                long[] order = Enumerable.Range(0, (int)classes).Select(k => (long)k).OrderByDescending(k => x[Index(k)]).ToArray();
                double prefix = 0;
                for (int k = 0; k < classes; k++)
                {
                    long i = Index(order[k]);
                    if (expectedDrop[i] != actualDrop[i])
                    {
                        mismatches++;
                        if (k > 0 && Math.Abs(prefix - rate) < 2.5e-7)
                        {
                            nearTies++;
                        }
                    }

                    prefix += Math.Exp(x[i]);
                }
            }
        }

        return (nearTies, mismatches);
    }

    [Fact]
    public void SameSeedGivesSameImagesAndRandomSeedIsReported()
    {
        var request = Valid with { Seed = null };
        GenerationResult first = _pipeline.Generate(request);
        Assert.True(first.Seed < VQDiffusionPipeline.MaxRandomSeed);
        GenerationResult again = _pipeline.Generate(request with { Seed = first.Seed });
        Assert.Equal(first.Images[0].Rgb, again.Images[0].Rgb);
    }

    [Fact]
    public void CancellationStopsBetweenSteps()
    {
        using var cts = new CancellationTokenSource();
        int steps = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => _pipeline.Generate(
            Valid with { NumInferenceSteps = 10 },
            step =>
            {
                steps = step.CompletedSteps;
                if (step.CompletedSteps == 2)
                {
                    cts.Cancel();
                }
            },
            cancellationToken: cts.Token));
        Assert.Equal(2, steps);
    }

    [Fact]
    public void StepContextReportsTokensAndDecodesPreviews()
    {
        var request = Valid with { Prompts = ["a red car", "a blue bird"], NumInferenceSteps = 4 };
        int calls = 0;
        _pipeline.Generate(request, step =>
        {
            calls++;
            Assert.Equal(4, step.TotalSteps);
            Assert.Equal(4 - step.CompletedSteps, step.Timestep);
            long[] tokens = step.Tokens();
            Assert.Equal(2 * 64, tokens.Length);
            Assert.All(tokens, t => Assert.InRange(t, 0, step.MaskClass));
            GeneratedImage preview = step.Preview(1);
            Assert.Equal(1, preview.Index);
            Assert.Equal(1, preview.PromptIndex);
            Assert.Equal(32 * 32 * 3, preview.Rgb.Length);
        });
        Assert.Equal(4, calls);
    }

    [Fact]
    public void PreviewAtTheLastStepIsTheFinalImage()
    {
        GeneratedImage? lastPreview = null;
        GenerationResult result = _pipeline.Generate(Valid, step =>
        {
            if (step.CompletedSteps == step.TotalSteps)
            {
                lastPreview = step.Preview(0);
            }
        });
        Assert.NotNull(lastPreview);
        Assert.Equal(result.Images[0].Rgb, lastPreview!.Rgb);
    }

    public static TheoryData<string, GenerationRequest> InvalidRequests()
    {
        var ok = Valid;
        return new TheoryData<string, GenerationRequest>
        {
            { "prompts", ok with { Prompts = [] } },
            { "prompts", ok with { Prompts = Enumerable.Repeat("x", 17).ToArray() } },
            { "prompts[1]", ok with { Prompts = ["ok", new string('a', 4097)] } },
            { "prompts[0]", ok with { Prompts = [string.Concat(Enumerable.Repeat("😀", GenerationLimits.Default.MaxPromptCharacters + 1))] } },
            { "num_inference_steps", ok with { NumInferenceSteps = 0 } },
            { "num_inference_steps", ok with { NumInferenceSteps = 101 } },
            { "guidance_scale", ok with { GuidanceScale = float.NaN } },
            { "guidance_scale", ok with { GuidanceScale = -1 } },
            { "guidance_scale", ok with { GuidanceScale = float.PositiveInfinity } },
            { "truncation_rate", ok with { TruncationRate = 0 } },
            { "truncation_rate", ok with { TruncationRate = 1.5f } },
            { "truncation_rate", ok with { TruncationRate = float.NaN } },
            { "num_images_per_prompt", ok with { NumImagesPerPrompt = 0 } },
            { "num_images_per_prompt", ok with { NumImagesPerPrompt = 9 } },
            { "num_images_per_prompt", ok with { Prompts = ["a", "b", "c"], NumImagesPerPrompt = 6 } },
            { "initial_latents", ok with { InitialLatents = new long[63] } },
            { "initial_latents", ok with { InitialLatents = Enumerable.Repeat(65L, 64).ToArray() } },
            { "initial_latents", ok with { InitialLatents = Enumerable.Repeat(-1L, 64).ToArray() } },
        };
    }

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public void InvalidArgumentsAreRejectedUpFrontWithTheirName(string field, GenerationRequest request)
    {
        var ex = Assert.Throws<GenerationArgumentException>(() => _pipeline.Generate(request));
        Assert.Equal(field, ex.Field);
        Assert.Contains(field.Split('[')[0], ex.Reason);
        _output.WriteLine($"{field}: {ex.Reason}");
    }

    [Fact]
    public void PromptLengthsAreCountedInUnicodeCharacters()
    {
        int max = GenerationLimits.Default.MaxPromptCharacters;
        string emoji = string.Concat(Enumerable.Repeat("😀", max)); // 2 × max UTF-16 units
        _pipeline.Validate(Valid with { Prompts = [emoji] });
        var ex = Assert.Throws<GenerationArgumentException>(() => _pipeline.Validate(Valid with { Prompts = [emoji + "a"] }));
        Assert.Equal($"prompts[0] has {max + 1} characters; at most {max} are allowed.", ex.Reason);
        ex = Assert.Throws<GenerationArgumentException>(() => _pipeline.Validate(Valid with { Prompts = [new string('a', max + 1)] }));
        Assert.Equal($"prompts[0] has {max + 1} characters; at most {max} are allowed.", ex.Reason);
    }

    [Fact]
    public void UserLatentsWithMaskTokensAreAccepted()
    {
        long[] latents = Enumerable.Range(0, 64).Select(i => (long)(i % 65)).ToArray();
        GenerationResult result = _pipeline.Generate(Valid with { InitialLatents = latents });
        Assert.Single(result.Images);
    }

    private static void AssertBitIdentical(torch.Tensor expected, torch.Tensor actual, string what) => TensorAssert.SameBits(expected, actual, what);
}
