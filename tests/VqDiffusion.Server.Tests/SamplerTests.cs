using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// The vq-diffusion sampler, editing and inpainting over a real HTTP/2 connection: every case of the improved golden
/// set (tokens after every step through snapshots, progress per network call, the pixels), the started event,
/// GetModelInfo's samplers, and INVALID_ARGUMENT with the field path of every new field.
/// </summary>
public sealed class SamplerTests : IClassFixture<ImprovedServerFixture>
{
    private readonly RunningServer _server;
    private readonly ITestOutputHelper _output;

    public SamplerTests(ImprovedServerFixture fixture, ITestOutputHelper output)
    {
        _server = fixture.Server;
        _output = output;
    }

    private VqDiffusionService.VqDiffusionServiceClient Client => _server.Client;

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

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task CaseReproducesTheOriginalThroughTheServer(string name)
    {
        ImprovedGoldenCases.Case c = ImprovedGoldenCases.Get(Golden, name);
        var golden = ImprovedGoldenCases.Load(Golden, c.File);
        long[] stepT = golden["step_t"].data<long>().ToArray();
        int batch = c.Request.BatchSize;
        int pixels = (int)golden["step_tokens"].shape[2];

        GenerateRequest request = StreamCollector.ToProto(c.Request);
        request.Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true };
        var events = await StreamCollector.ReadAllAsync(Client.Generate(request));

        StartedEvent started = events.Single(e => e.Started is not null).Started;
        Assert.Equal(SamplerKind.VqDiffusion, started.Sampler);
        Assert.Equal(c.Steps, started.TotalSteps);
        Assert.Equal(stepT, started.Timesteps);
        Assert.Equal(c.Request.Seed, started.Seed);

        var progress = events.Where(e => e.Progress is not null).Select(e => e.Progress).ToList();
        Assert.Equal(Enumerable.Range(1, c.Steps), progress.Select(p => p.CompletedSteps));
        Assert.All(progress, p => Assert.Equal(c.Steps, p.TotalSteps));
        Assert.Equal(stepT, progress.Select(p => p.Timestep));

        // Snapshots: every image's tokens after every step, prompt-major.
        var snapshots = events.Where(e => e.Snapshot is not null).Select(e => e.Snapshot).ToList();
        Assert.Equal(c.Steps * batch, snapshots.Count);
        for (int s = 0; s < c.Steps; s++)
        {
            long[] expected = c.PromptMajor(golden["step_tokens"][s].data<long>().ToArray(), pixels);
            for (int i = 0; i < batch; i++)
            {
                SnapshotEvent snapshot = snapshots[(s * batch) + i];
                Assert.Equal((s + 1, i, stepT[s]), (snapshot.CompletedSteps, snapshot.ImageIndex, snapshot.Timestep));
                Assert.True(expected.Skip(i * pixels).Take(pixels).Select(v => (int)v).SequenceEqual(snapshot.Tokens), $"{name}: step {s}, image {i}: tokens differ from the original");
            }
        }

        byte[] expectedPixels = golden["images_uint8_nhwc"].data<byte>().ToArray();
        int size = expectedPixels.Length / batch;
        var images = events.Where(e => e.Image is not null).Select(e => e.Image).ToList();
        Assert.Equal(Enumerable.Range(0, batch), images.Select(i => i.Index));
        for (int i = 0; i < batch; i++)
        {
            Assert.Equal(i / c.Request.NumImagesPerPrompt, images[i].PromptIndex);
            PixelAssert.WithinDecoderRounding(expectedPixels.AsSpan(c.Rows[i] * size, size), ImageEncoder.DecodeRgb(images[i].Data.ToByteArray()).Rgb, $"{name} image {i}", _output);
        }

        _output.WriteLine($"{name}: {c.Steps} progress events with the original's timesteps; every snapshot's tokens identical");
    }

    [Fact]
    public async Task StartedReportsTheResolvedSamplerParameters()
    {
        var request = new GenerateRequest
        {
            Prompts = { "a red car" },
            Seed = 1,
            Sampler = new SamplerOptions { Kind = SamplerKind.VqDiffusion, Speed = 0.5, UnmaskSchedule = { Enumerable.Range(0, 100).Select(t => t == 99 ? 12 : t == 0 ? 1 : 0) } },
        };
        var events = await StreamCollector.ReadAllAsync(Client.Generate(request));
        StartedEvent started = events.Single(e => e.Started is not null).Started;
        Assert.Equal((SamplerKind.VqDiffusion, 100, 5f, 0.5, UnmaskPrior.HighQuality, 4), (started.Sampler, started.NumInferenceSteps, started.GuidanceScale, started.Speed, started.Prior, started.TotalSteps));
        Assert.Equal(new long[] { 99, 99, 99, 0 }, started.Timesteps);
        Assert.False(started.HasEditStrength);

        var edit = new GenerateRequest
        {
            Prompts = { "a red car" },
            Seed = 1,
            Sampler = new SamplerOptions { Kind = SamplerKind.VqDiffusion },
            Edit = new EditOptions { SourceTokens = { Enumerable.Repeat(3, 64) }, Strength = 0.2 },
        };
        started = (await StreamCollector.ReadAllAsync(Client.Generate(edit))).Single(e => e.Started is not null).Started;
        Assert.Equal((20, 1f, 20, 0.2), (started.NumInferenceSteps, started.GuidanceScale, started.TotalSteps, started.EditStrength));

        started = (await StreamCollector.ReadAllAsync(Client.Generate(new GenerateRequest { Prompts = { "a" }, NumInferenceSteps = 3 }))).Single(e => e.Started is not null).Started;
        Assert.Equal((SamplerKind.Diffusers, 3, 1.0, UnmaskPrior.None), (started.Sampler, started.TotalSteps, started.Speed, started.Prior));
    }

    [Fact]
    public async Task InpaintingThroughTheServerKeepsTheSourceAndAnImageSourceEqualsItsTokens()
    {
        int[] source = Enumerable.Range(0, 64).Select(p => (p * 5) % 64).ToArray();
        var mask = Enumerable.Range(0, 64).Select(p => p / 8 >= 4).ToArray(); // the bottom half
        var request = new GenerateRequest
        {
            Prompts = { "a red car" },
            NumInferenceSteps = 8,
            Seed = 2,
            Edit = new EditOptions { SourceTokens = { source }, Mask = { mask } },
            Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true },
        };
        var events = await StreamCollector.ReadAllAsync(Client.Generate(request));
        var snapshots = events.Where(e => e.Snapshot is not null).Select(e => e.Snapshot).ToList();
        Assert.Equal(8, snapshots.Count);
        Assert.All(snapshots, s => Assert.All(Enumerable.Range(0, 64).Where(p => !mask[p]), p => Assert.Equal(source[p], s.Tokens[p])));

        // The same inpainting with the mask as a PNG (white bottom half) gives the same pixels, and the same file but for
        // the parameters' "Mask: image" (instead of "Mask: tokens").
        var maskPixels = new byte[32 * 32 * 3];
        for (int y = 16; y < 32; y++)
        {
            Array.Fill(maskPixels, (byte)255, y * 32 * 3, 32 * 3);
        }

        byte[] png = ImageEncoder.Encode(new Model.Pipelines.GeneratedImage(0, 0, 32, 32, maskPixels), Model.Imaging.ImageFormat.Png);
        request.Edit.Mask.Clear();
        request.Edit.MaskImage = ByteString.CopyFrom(png);
        var again = await StreamCollector.ReadAllAsync(Client.Generate(request));
        byte[] tokenMasked = events.Single(e => e.Image is not null).Image.Data.ToByteArray();
        byte[] imageMasked = again.Single(e => e.Image is not null).Image.Data.ToByteArray();
        Assert.Equal(ImageEncoder.DecodeRgb(tokenMasked).Rgb, ImageEncoder.DecodeRgb(imageMasked).Rgb);
        string tokenText = ImageMetadata.Read(tokenMasked).Texts[GenerationParameters.ParametersKey];
        string imageText = ImageMetadata.Read(imageMasked).Texts[GenerationParameters.ParametersKey];
        Assert.Contains(", Mask: tokens,", tokenText);
        Assert.Equal(tokenText.Replace(", Mask: tokens,", ", Mask: image,", StringComparison.Ordinal), imageText);
    }

    [Fact]
    public async Task GetModelInfoReportsTheSamplersSpeedsAndSchedules()
    {
        GetModelInfoResponse info = await Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.Equal(new[] { "diffusers", "vq-diffusion" }, info.Samplers.Select(s => s.Name));
        Assert.Equal(new[] { SamplerKind.Diffusers, SamplerKind.VqDiffusion }, info.Samplers.Select(s => s.Kind));
        Assert.True(info.Samplers[0].IsDefault);
        SamplerInfo vq = info.Samplers[1];
        Assert.Equal((0.1, 100.0), (vq.MinSpeed, vq.MaxSpeed));
        Assert.Contains(vq.Speeds, s => s.Speed == 2 && s.Mode == "fast" && s.NetworkCalls == 51);
        Assert.Contains(vq.Speeds, s => s.Speed == 4 && s.NetworkCalls == 26);
        Assert.Contains(vq.Speeds, s => s.Speed == 0.5 && s.Mode == "high-quality" && s.TokensPerCall == 5);
        Assert.Equal(2, vq.DefaultUnmaskSchedules.Count);
        Assert.All(vq.DefaultUnmaskSchedules, s => Assert.Equal(100, s.Counts.Count));
        Assert.All(vq.DefaultUnmaskSchedules, s => Assert.False(s.FitsLatentGrid));
    }

    private static GenerateRequest Vq(Action<SamplerOptions> configure)
    {
        var options = new SamplerOptions { Kind = SamplerKind.VqDiffusion };
        configure(options);
        return new GenerateRequest { Prompts = { "a" }, Sampler = options };
    }

    private static GenerateRequest Edit(Action<EditOptions> configure, SamplerKind kind = SamplerKind.Diffusers)
    {
        var edit = new EditOptions();
        configure(edit);
        return new GenerateRequest { Prompts = { "a" }, Sampler = new SamplerOptions { Kind = kind }, Edit = edit };
    }

    public static TheoryData<string, GenerateRequest, string> InvalidRequests() => new()
    {
        { "sampler.kind", new GenerateRequest { Prompts = { "a" }, Sampler = new SamplerOptions { Kind = (SamplerKind)9 } }, "SAMPLER_KIND_VQ_DIFFUSION" },
        { "sampler.speed", Vq(o => o.Speed = -1), "in (0, 100]" },
        { "sampler.speed", new GenerateRequest { Prompts = { "a" }, Sampler = new SamplerOptions { Speed = 2 } }, "vq-diffusion sampler" },
        { "sampler.prior", Vq(o => o.Prior = (UnmaskPrior)8), "UNMASK_PRIOR_PURITY" },
        { "sampler.prior", Vq(o => { o.Prior = UnmaskPrior.Purity; o.Speed = 2; }), "sample_fast" },
        { "sampler.prior_weight", Vq(o => { o.Prior = UnmaskPrior.Purity; o.PriorWeight = double.PositiveInfinity; }), "between 0 and 100" },
        { "sampler.unmask_schedule", Vq(o => o.Prior = UnmaskPrior.Purity), "unmasks 1024 tokens before t = 0" },
        { "sampler.unmask_schedule", Vq(o => { o.Prior = UnmaskPrior.Purity; o.UnmaskSchedule.Add(1); }), "one count per timestep" },
        { "sampler.unmask_schedule[7]", Vq(o => o.UnmaskSchedule.AddRange(Enumerable.Range(0, 100).Select(t => t == 7 ? 1000 : 1))), "between 0 and 64" },
        { "sampler.classifier_free_embeddings", Vq(o => o.ClassifierFreeEmbeddings = (ClassifierFreeEmbeddings)5), "EMPTY_PROMPT" },
        { "num_inference_steps", new GenerateRequest { Prompts = { "a" }, NumInferenceSteps = 50, Sampler = new SamplerOptions { Kind = SamplerKind.VqDiffusion } }, "must be 100 (or unset)" },
        { "edit.source_tokens", Edit(e => e.Strength = 0.5), "edit needs a source" },
        { "edit.source_tokens", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 63)); e.Strength = 0.5; }), "64 values, got 63" },
        { "edit.source_tokens[2]", Edit(e => { e.SourceTokens.AddRange(Enumerable.Range(0, 64).Select(p => p == 2 ? 64 : 1)); e.Strength = 0.5; }), "not an image token" },
        { "edit.source_image", Edit(e => { e.SourceImage = ByteString.CopyFromUtf8("not an image"); e.Strength = 0.5; }), "not a decodable image" },
        { "edit.source_image", Edit(e => { e.SourceImage = ByteString.CopyFrom(BlackPng(16, 16)); e.Strength = 0.5; }), "output size 32 × 32, got 16 × 16" },
        { "edit.strength", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.Strength = 2; }), "in (0, 1]" },
        { "edit.strength", Edit(e => e.SourceTokens.AddRange(Enumerable.Repeat(1, 64))), "and/or a mask" },
        { "edit.mask", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.Mask.AddRange(Enumerable.Repeat(true, 10)); }), "64 values" },
        { "edit.mask", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.Mask.AddRange(Enumerable.Repeat(false, 64)); }), "marks no token" },
        { "edit.mask_image", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.MaskImage = ByteString.CopyFromUtf8("GIF?"); }), "not a decodable image" },
        { "edit.mask_image", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.MaskImage = ByteString.CopyFrom(BlackPng(32, 16)); }), "got 32 × 16" },
        { "edit.mask_image", Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.MaskImage = ByteString.CopyFrom(BlackPng(32, 32)); }), "marks no token" },
        { "guidance_scale", WithGuidance(Edit(e => { e.SourceTokens.AddRange(Enumerable.Repeat(1, 64)); e.Strength = 0.5; }, SamplerKind.VqDiffusion), 3), "at most 1" },
        { "snapshots.every_n_steps", WithSnapshots(Vq(o => o.Speed = 4), 27), "between 0 and the request's steps (26)" },
    };

    private static GenerateRequest WithGuidance(GenerateRequest r, float g)
    {
        r.GuidanceScale = g;
        return r;
    }

    private static GenerateRequest WithSnapshots(GenerateRequest r, int every)
    {
        r.Snapshots = new SnapshotOptions { EveryNSteps = every };
        return r;
    }

    private static byte[] BlackPng(int width, int height) =>
        ImageEncoder.Encode(new Model.Pipelines.GeneratedImage(0, 0, width, height, new byte[width * height * 3]), Model.Imaging.ImageFormat.Png);

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public async Task InvalidSamplerAndEditFieldsGetInvalidArgumentWithTheirPath(string field, GenerateRequest request, string text)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(Client.Generate(request)));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains(text, ex.Status.Detail);
        BadRequest? badRequest = ex.GetRpcStatus()?.GetDetail<BadRequest>();
        Assert.NotNull(badRequest);
        Assert.Equal(field, Assert.Single(badRequest!.FieldViolations).Field);
        _output.WriteLine($"{field}: {ex.Status.Detail}");
    }
}
