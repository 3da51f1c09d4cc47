using TorchSharp;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>
/// Editing (a source noised to ⌊T · strength⌋ − 1 and denoised) and inpainting (a mask of the tokens to regenerate)
/// with both samplers: the source outside the mask after every step, the start the strength implies, determinism,
/// image sources and image-space masks.
/// </summary>
public sealed class EditingTests : IClassFixture<TinyPipelineFixture>
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly ITestOutputHelper _output;

    public EditingTests(TinyPipelineFixture fixture, ITestOutputHelper output)
    {
        _pipeline = fixture.Pipeline;
        _output = output;
    }

    private int Pixels => _pipeline.transformer.NumLatentPixels;

    private int Codes => _pipeline.transformer.NumVectorEmbeds - 1;

    /// <summary>A source grid per image: image i's token at p is (7p + 3 + 11i) mod codes.</summary>
    private long[] Source(int images) => Enumerable.Range(0, images * Pixels).Select(i => (long)(((7 * (i % Pixels)) + 3 + (11 * (i / Pixels))) % Codes)).ToArray();

    /// <summary>The left half of the grid.</summary>
    private bool[] LeftHalf() => Enumerable.Range(0, Pixels).Select(p => p % _pipeline.transformer.Width < _pipeline.transformer.Width / 2).ToArray();

    public static TheoryData<string> Samplers() => new() { "diffusers", "vq-diffusion", "vq-diffusion-fast", "vq-diffusion-purity" };

    private SamplerOptions Options(string sampler) => sampler switch
    {
        "diffusers" => SamplerOptions.Default,
        "vq-diffusion" => new SamplerOptions { Kind = SamplerKind.VQDiffusion },
        "vq-diffusion-fast" => new SamplerOptions { Kind = SamplerKind.VQDiffusion, Speed = 4 },

        // The purity prior on the half grid: 32 masked tokens, one per timestep 99 … 69 and the rest at t = 0.
        _ => new SamplerOptions
        {
            Kind = SamplerKind.VQDiffusion,
            Prior = UnmaskPrior.Purity,
            PriorWeight = 1,
            UnmaskSchedule = Enumerable.Range(0, 100).Select(t => t >= 69 ? 1 : t == 0 ? 1 : 0).ToArray(),
        },
    };

    private int? Steps(string sampler) => sampler == "diffusers" ? 12 : null;

    [Theory]
    [MemberData(nameof(Samplers))]
    public void InpaintingKeepsTheSourceOutsideTheMaskAfterEveryStep(string sampler)
    {
        long[] source = Source(2);
        bool[] mask = LeftHalf();
        var request = new GenerationRequest
        {
            Prompts = ["a red car"],
            NumImagesPerPrompt = 2,
            NumInferenceSteps = Steps(sampler),
            Seed = 3,
            Sampler = Options(sampler),
            Edit = new EditOptions { SourceTokens = source, Mask = mask },
        };
        using DenoisingRun run = _pipeline.Start(request);
        long[] start = run.Tokens();
        for (int i = 0; i < start.Length; i++)
        {
            Assert.Equal(mask[i % Pixels] ? Codes : source[i], start[i]);
        }

        int steps = 0;
        while (!run.IsDone)
        {
            long[] tokens = run.Step().Tokens();
            steps++;
            for (int i = 0; i < tokens.Length; i++)
            {
                if (!mask[i % Pixels])
                {
                    Assert.True(source[i] == tokens[i], $"{sampler}: step {steps}: token {i} outside the mask changed from {source[i]} to {tokens[i]}");
                }
            }
        }

        long[] final = run.Tokens();
        int regenerated = Enumerable.Range(0, final.Length).Count(i => mask[i % Pixels] && final[i] != source[i]);
        Assert.All(final, t => Assert.InRange(t, 0, Codes - 1));
        Assert.True(regenerated > 0, $"{sampler}: no masked token was generated anew");
        _output.WriteLine($"{sampler}: {steps} steps; outside the mask the source at every step; {regenerated} of {final.Length / 2} masked tokens differ from the source");
    }

    [Theory]
    [MemberData(nameof(Samplers))]
    public void TheSameSeedGivesTheSameBytes(string sampler)
    {
        GenerationRequest Request(ulong seed) => new()
        {
            Prompts = ["a red car", "a cute puppy"],
            NumInferenceSteps = sampler == "diffusers" ? 25 : null,
            Seed = seed,
            Sampler = Options(sampler),

            // The original's editing runs every timestep: its fast and prior samplers inpaint (a mask, no strength).
            Edit = sampler is "vq-diffusion-fast" or "vq-diffusion-purity"
                ? new EditOptions { SourceTokens = Source(2), Mask = LeftHalf() }
                : new EditOptions { SourceTokens = Source(2), Strength = 0.25 },
        };

        byte[] first = Png(_pipeline.Generate(Request(5)));
        byte[] again = Png(_pipeline.Generate(Request(5)));
        byte[] other = Png(_pipeline.Generate(Request(6)));
        Assert.Equal(first, again);
        Assert.NotEqual(first, other);
    }

    [Theory]
    [InlineData(SamplerKind.Diffusers)]
    [InlineData(SamplerKind.VQDiffusion)]
    public void StrengthSetsTheStartTimestepAndHowMuchOfTheSourceTheStartKeeps(SamplerKind kind)
    {
        long[] source = Source(4);
        double previous = 1.1;
        foreach (double strength in new[] { 0.1, 0.3, 0.6, 1.0 })
        {
            var request = new GenerationRequest
            {
                Prompts = ["a red car", "a cute puppy"],
                NumImagesPerPrompt = 2,
                Seed = 17,
                Sampler = new SamplerOptions { Kind = kind },
                Edit = new EditOptions { SourceTokens = source, Strength = strength },
            };
            using DenoisingRun run = _pipeline.Start(request);
            int start = (int)(100 * strength);
            Assert.Equal(start, run.Request.NumInferenceSteps);
            Assert.Equal(Enumerable.Range(0, start).Reverse().Select(t => (long)t), run.Timesteps);

            // The start is one q_sample of the source at t = start - 1 with the request's generator (over the
            // sampler's rows: the original's are [p0, p1, p0, p1]).
            using var generator = new torch.Generator(17);
            long[] rows = kind == SamplerKind.Diffusers ? source : Reorder(source, [0, 2, 1, 3]);
            using var sourceTensor = torch.tensor(rows, [4, Pixels]);
            using var noised = _pipeline.OriginalScheduler.QSample(sourceTensor, start - 1, generator);
            long[] expected = noised.data<long>().ToArray();
            long[] tokens = run.Tokens();
            Assert.Equal(kind == SamplerKind.Diffusers ? expected : Reorder(expected, [0, 2, 1, 3]), tokens);

            double kept = tokens.Zip(source).Count(p => p.First == p.Second) / (double)tokens.Length;
            double masked = tokens.Count(t => t == Codes) / (double)tokens.Length;
            double expectedMasked = _pipeline.OriginalScheduler.log_cumprod_ct[start - 1].exp().item<float>();
            _output.WriteLine($"{kind}, strength {strength}: start t = {start - 1}, {kept:P0} of the source kept, {masked:P0} masked (q: {expectedMasked:P0})");
            Assert.True(kept < previous, $"strength {strength} keeps {kept:P0}, not less than the smaller strength's {previous:P0}");
            Assert.InRange(masked, expectedMasked - 0.15, expectedMasked + 0.15);
            previous = kept;
        }

        Assert.True(previous < 0.05, "strength 1 must keep almost nothing of the source");
    }

    [Fact]
    public void ASourceImageIsEncodedToItsNearestCodes()
    {
        // An image the decoder made from a token grid, encoded back: the grid of codes the edit starts from.
        long[] source = Source(1);
        IReadOnlyList<GeneratedImage> images = Decode(source, 1);
        var image = new RgbImage(images[0].Width, images[0].Height, images[0].Rgb);
        using torch.Tensor tokens = _pipeline.EncodeImageTokens(image);
        Assert.Equal(new long[] { 1, Pixels }, tokens.shape);
        long[] encoded = tokens.data<long>().ToArray();
        Assert.All(encoded, t => Assert.InRange(t, 0, Codes - 1));

        // Encoding is the VQ-VAE's: quant_conv(encoder(x)) snapped to the codebook.
        using var x = ((torch.tensor(image.Rgb, [1, image.Height, image.Width, 3]).to(torch.float32) / 255.0 * 2) - 1).permute(0, 3, 1, 2).contiguous();
        using var latents = _pipeline.vqvae.Encode(x);
        var (zq, indices) = _pipeline.vqvae.quantize.Quantize(latents);
        using (zq)
        using (indices)
        {
            Assert.Equal(indices.data<long>().ToArray(), encoded);
        }

        // An edit of the image is the edit of its tokens, byte for byte.
        GenerationRequest Edit(EditOptions edit) => new() { Prompts = ["a red car"], NumInferenceSteps = 30, Seed = 4, Edit = edit };
        byte[] fromImage = Png(_pipeline.Generate(Edit(new EditOptions { SourceImage = image, Strength = 0.3 })));
        byte[] fromTokens = Png(_pipeline.Generate(Edit(new EditOptions { SourceTokens = encoded, Strength = 0.3 })));
        Assert.Equal(fromTokens, fromImage);
    }

    [Fact]
    public void AnImageMaskRegeneratesEveryTokenWithAMaskedPixelInItsPatch()
    {
        int f = _pipeline.VaeScaleFactor;
        int width = _pipeline.ImageWidth;
        var pixels = new bool[width * _pipeline.ImageHeight];
        pixels[(5 * width) + 13] = true;                    // token (1, 3)
        pixels[((2 * f) * width) + (6 * f) + f - 1] = true; // the last column of token (2, 6)
        bool[] tokens = _pipeline.LatentMask(new PixelMask(width, _pipeline.ImageHeight, pixels));
        int w = _pipeline.transformer.Width;
        Assert.Equal(new[] { (1 * w) + 3, (2 * w) + 6 }, Enumerable.Range(0, tokens.Length).Where(i => tokens[i]));

        // The same from a PNG: white (any channel ≥ 128) = regenerate.
        var rgb = new byte[pixels.Length * 3];
        rgb[(((5 * width) + 13) * 3) + 1] = 200;
        rgb[((((2 * f) * width) + (6 * f) + f - 1) * 3) + 2] = 128;
        rgb[0] = 127; // below the threshold: kept
        byte[] png = ImageEncoder.Encode(new GeneratedImage(0, 0, width, _pipeline.ImageHeight, rgb), ImageFormat.Png);
        PixelMask decoded = ImageEncoder.DecodeMask(png);
        Assert.Equal(tokens, _pipeline.LatentMask(decoded));

        long[] source = Source(1);
        GenerationResult result = _pipeline.Generate(new GenerationRequest
        {
            Prompts = ["a red car"],
            NumInferenceSteps = 10,
            Seed = 8,
            Edit = new EditOptions { SourceTokens = source, MaskImage = decoded },
        });
        Assert.Single(result.Images);
    }

    [Fact]
    public void RunsOfBothSamplersStepTogether()
    {
        // A vq-diffusion run steps alone inside StepTogether and gives what it gives alone.
        var vq = new GenerationRequest { Prompts = ["a red car"], Seed = 9, Sampler = new SamplerOptions { Kind = SamplerKind.VQDiffusion, Speed = 10 } };
        var diffusers = new GenerationRequest { Prompts = ["a cute puppy"], NumInferenceSteps = 11, Seed = 9 };
        byte[] vqAlone = Png(_pipeline.Generate(vq));
        byte[] diffusersAlone = Png(_pipeline.Generate(diffusers));
        using DenoisingRun a = _pipeline.Start(vq);
        using DenoisingRun b = _pipeline.Start(diffusers);
        Assert.Equal(a.TotalSteps, b.TotalSteps);
        while (!a.IsDone)
        {
            var results = DenoisingRun.StepTogether([a, b]);
            Assert.All(results, r => Assert.Null(r.Error));
        }

        Assert.Equal(vqAlone, ImageEncoder.Encode(a.Decode()[0], ImageFormat.Png));
        Assert.Equal(diffusersAlone, ImageEncoder.Encode(b.Decode()[0], ImageFormat.Png));
    }

    /// <summary>Rows of <see cref="Pixels"/> tokens permuted: result row i = rows[order[i]].</summary>
    private long[] Reorder(long[] rows, int[] order) => order.SelectMany(r => rows.Skip(r * Pixels).Take(Pixels)).ToArray();

    private IReadOnlyList<GeneratedImage> Decode(long[] tokens, int images)
    {
        using var grid = torch.tensor(tokens, [images, Pixels]);
        return _pipeline.DecodeToImages(grid, 1);
    }

    private static byte[] Png(GenerationResult result) => result.Images.SelectMany(i => ImageEncoder.Encode(i, ImageFormat.Png)).ToArray();
}
