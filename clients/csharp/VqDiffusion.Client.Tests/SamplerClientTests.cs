using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;
using ModelPipelines = VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Client.Tests;

/// <summary>
/// The vq-diffusion sampler and editing through the .NET client: every case of the improved golden set, requested with
/// <see cref="GenerateRequestExtensions"/>, gives the original's tokens after every step (snapshots), one progress
/// report per network call and the original's pixels.
/// </summary>
public sealed class SamplerClientTests : IClassFixture<ImprovedServerFixture>
{
    private readonly ImprovedServerFixture _fixture;
    private readonly ITestOutputHelper _output;

    public SamplerClientTests(ImprovedServerFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    private static string Golden => ImprovedGoldenCases.GoldenDir;

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in ImprovedGoldenCases.All(Golden))
        {
            data.Add(c.Name);
        }

        return data;
    }

    /// <summary>A case's request built with the client's helpers.</summary>
    private static GenerateRequest RequestFor(ImprovedGoldenCases.Case c)
    {
        ModelPipelines.GenerationRequest r = c.Request;
        ModelPipelines.SamplerOptions s = r.SamplerOrDefault;
        var request = new GenerateRequest { NumImagesPerPrompt = r.NumImagesPerPrompt, Seed = r.Seed!.Value, TruncationRate = r.TruncationRate };
        request.Prompts.AddRange(r.Prompts);
        if (r.GuidanceScale is { } g)
        {
            request.GuidanceScale = g;
        }

        request.WithVqDiffusion(
            speed: s.Speed,
            prior: s.Prior switch
            {
                ModelPipelines.UnmaskPrior.HighQuality => UnmaskPrior.HighQuality,
                ModelPipelines.UnmaskPrior.Purity => UnmaskPrior.Purity,
                _ => UnmaskPrior.None,
            },
            priorWeight: s.PriorWeight,
            unmaskSchedule: s.UnmaskSchedule,
            classifierFreeEmbeddings: s.ClassifierFreeEmbeddings == ModelPipelines.ClassifierFreeEmbeddings.EmptyPrompt ? ClassifierFreeEmbeddings.EmptyPrompt : ClassifierFreeEmbeddings.Learned);
        if (r.Edit is { } edit)
        {
            request.WithEditTokens(edit.SourceTokens!.Select(v => (int)v), edit.Strength);
        }

        return request;
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task CaseReproducesTheOriginalThroughTheClient(string name)
    {
        ImprovedGoldenCases.Case c = ImprovedGoldenCases.Get(Golden, name);
        var golden = ImprovedGoldenCases.Load(Golden, c.File);
        long[] stepT = golden["step_t"].data<long>().ToArray();
        int pixels = (int)golden["step_tokens"].shape[2];
        int batch = c.Request.BatchSize;
        GenerateRequest request = RequestFor(c);
        request.Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true };

        using var client = new VqDiffusionClient(_fixture.Server.Address);
        var snapshots = new List<GenerationEvent.Snapshot>();
        var progress = new List<GenerationEvent.Progress>();
        var images = new List<GenerationEvent.ImageGenerated>();
        GenerationEvent.Started? started = null;
        await foreach (GenerationEvent e in client.GenerateAsync(request))
        {
            switch (e)
            {
                case GenerationEvent.Started s:
                    started = s;
                    break;
                case GenerationEvent.Progress p:
                    progress.Add(p);
                    break;
                case GenerationEvent.Snapshot s:
                    snapshots.Add(s);
                    break;
                case GenerationEvent.ImageGenerated i:
                    images.Add(i);
                    break;
            }
        }

        Assert.NotNull(started);
        Assert.Equal((c.Steps, SamplerKind.VqDiffusion, c.Steps), (started!.TotalSteps, started.Sampler, started.ExpectedSteps));
        Assert.Equal(stepT, progress.Select(p => p.Timestep));
        Assert.All(progress, p => Assert.Equal(c.Steps, p.TotalSteps));
        for (int s = 0; s < c.Steps; s++)
        {
            long[] expected = c.PromptMajor(golden["step_tokens"][s].data<long>().ToArray(), pixels);
            for (int i = 0; i < batch; i++)
            {
                Assert.True(expected.Skip(i * pixels).Take(pixels).Select(v => (int)v).SequenceEqual(snapshots[(s * batch) + i].Tokens), $"{name}: step {s} image {i}: tokens differ");
            }
        }

        byte[] expectedPixels = golden["images_uint8_nhwc"].data<byte>().ToArray();
        int size = expectedPixels.Length / batch;
        Assert.Equal(Enumerable.Range(0, batch), images.Select(i => i.Index));
        for (int i = 0; i < batch; i++)
        {
            PixelAssert.WithinDecoderRounding(expectedPixels.AsSpan(c.Rows[i] * size, size), ImageEncoder.DecodeRgb(images[i].Data).Rgb, $"{name} image {i}", _output);
        }
    }

    [Fact]
    public async Task GenerateImagesReportsEveryNetworkCall()
    {
        using var client = new VqDiffusionClient(_fixture.Server.Address);
        var reports = new List<GenerationProgress>();
        var recorder = new SyncProgress(reports);
        var request = new GenerateRequest { Prompts = { "a red car" }, Seed = 1 }.WithVqDiffusion(speed: 4);
        GenerationOutput output = await client.GenerateImagesAsync(request, recorder);
        Assert.Equal(26, output.Started.TotalSteps);
        Assert.Equal(Enumerable.Range(1, 26), reports.Where(p => p.Stage == GenerationStage.Denoising).Select(p => p.CompletedSteps));
        Assert.Equal((GenerationStage.Completed, 26, 26), (reports[^1].Stage, reports[^1].CompletedSteps, reports[^1].TotalSteps));
    }

    /// <summary>
    /// The cross-client vq-diffusion request (fast inference, guidance, truncation, an inpainting mask over source
    /// tokens); with VQD_CROSS_CLIENT_OUT set its PNGs go to <c>$VQD_CROSS_CLIENT_OUT.vq.0</c> and <c>.vq.1</c>.
    /// </summary>
    [Fact]
    public async Task VqDiffusionCrossClientRequest()
    {
        using var client = new VqDiffusionClient(_fixture.Server.Address);
        var request = new GenerateRequest
        {
            Prompts = { "a photo of a cat", "a red car" },
            GuidanceScale = 3,
            TruncationRate = 0.9f,
            Seed = 123,
        }
            .WithVqDiffusion(speed: 4)
            .WithEditTokens(Enumerable.Range(0, 128).Select(i => (i * 5) % 64))
            .WithMask(Enumerable.Range(0, 64).Select(p => p / 8 >= 4));
        GenerationOutput output = await client.GenerateImagesAsync(request);
        Assert.Equal([0, 1], output.Images.Select(i => i.Index));
        string? prefix = Environment.GetEnvironmentVariable("VQD_CROSS_CLIENT_OUT");
        if (!string.IsNullOrEmpty(prefix))
        {
            foreach (var image in output.Images)
            {
                await File.WriteAllBytesAsync($"{prefix}.vq.{image.Index}", image.Data);
            }
        }
    }

    private sealed class SyncProgress(List<GenerationProgress> reports) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value)
        {
            lock (reports)
            {
                reports.Add(value);
            }
        }
    }
}
