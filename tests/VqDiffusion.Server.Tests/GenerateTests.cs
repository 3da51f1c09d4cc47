using Google.Rpc;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

public sealed class GenerateTests : IClassFixture<SharedServerFixture>
{
    private readonly RunningServer _server;
    private readonly ITestOutputHelper _output;

    public GenerateTests(SharedServerFixture fixture, ITestOutputHelper output)
    {
        _server = fixture.Server;
        _output = output;
    }

    private VqDiffusionService.VqDiffusionServiceClient Client => _server.Client;

    public static TheoryData<string> RunNames()
    {
        var data = new TheoryData<string>();
        foreach (var run in GoldenPipelineRuns.All(Fixtures.TinyGolden))
        {
            data.Add(run.Name);
        }

        return data;
    }

    [Fact]
    public async Task StreamHasTheDocumentedEventSequence()
    {
        var request = new GenerateRequest
        {
            Prompts = { "a red car", "a cute puppy" },
            NumInferenceSteps = 6,
            NumImagesPerPrompt = 2,
            Seed = 11,
            Snapshots = new SnapshotOptions { EveryNSteps = 4, IncludeTokens = true, IncludePreview = true },
        };
        var events = await StreamCollector.ReadAllAsync(Client.Generate(request));
        var kinds = events.Select(e => e.EventCase).ToList();
        _output.WriteLine(string.Join(" ", kinds));

        Assert.Equal(GenerateResponse.EventOneofCase.Queued, kinds[0]);
        int started = kinds.IndexOf(GenerateResponse.EventOneofCase.Started);
        Assert.True(kinds.Take(started).All(k => k == GenerateResponse.EventOneofCase.Queued));
        Assert.Equal(1, kinds.Count(k => k == GenerateResponse.EventOneofCase.Started));

        var progress = events.Where(e => e.EventCase == GenerateResponse.EventOneofCase.Progress).Select(e => e.Progress).ToList();
        Assert.Equal(Enumerable.Range(1, 6), progress.Select(p => p.CompletedSteps));
        Assert.All(progress, p => Assert.Equal(6, p.TotalSteps));
        Assert.Equal(new long[] { 5, 4, 3, 2, 1, 0 }, progress.Select(p => p.Timestep));
        Assert.Equal(events.Single(e => e.Started is not null).Started.Timesteps, progress.Select(p => p.Timestep));

        // Snapshots after steps 4 and 6 (the last), one per image, right after that step's progress.
        var snapshots = events.Where(e => e.Snapshot is not null).Select(e => e.Snapshot).ToList();
        Assert.Equal(new[] { 4, 4, 4, 4, 6, 6, 6, 6 }, snapshots.Select(s => s.CompletedSteps));
        Assert.Equal(new[] { 0, 1, 2, 3, 0, 1, 2, 3 }, snapshots.Select(s => s.ImageIndex));
        Assert.All(snapshots, s =>
        {
            Assert.Equal(64, s.Tokens.Count);
            Assert.Equal((8, 8), (s.Height, s.Width));
            Assert.Equal(s.Tokens.Count(t => t == 64), s.MaskedCount);
            Assert.Equal("image/png", s.PreviewMimeType);
            Assert.Equal(32, ImageEncoder.DecodeRgb(s.Preview.ToByteArray()).Width);
        });
        int firstSnapshot = kinds.IndexOf(GenerateResponse.EventOneofCase.Snapshot);
        Assert.Equal(4, events[firstSnapshot - 1].Progress.CompletedSteps);

        var images = events.Where(e => e.Image is not null).Select(e => e.Image).ToList();
        Assert.Equal(new[] { 0, 1, 2, 3 }, images.Select(i => i.Index));
        Assert.Equal(new[] { 0, 0, 1, 1 }, images.Select(i => i.PromptIndex));
        Assert.All(images, i => Assert.Equal(("image/png", 32, 32, 11UL), (i.MimeType, i.Width, i.Height, i.Seed)));

        Assert.Equal(GenerateResponse.EventOneofCase.Completed, kinds[^1]);
        Assert.Equal(4, events[^1].Completed.NumImages);
        Assert.Equal(1 + 6 + 8 + 4 + 1, kinds.Count - started);

        // At the last step nothing is masked, so the preview shows the final image (decoded alone
        // instead of in the batch of 4, hence the decoder's float-rounding tolerance).
        for (int i = 0; i < 4; i++)
        {
            PixelAssert.WithinDecoderRounding(
                ImageEncoder.DecodeRgb(images[i].Data.ToByteArray()).Rgb,
                ImageEncoder.DecodeRgb(snapshots[4 + i].Preview.ToByteArray()).Rgb,
                $"last-step preview {i}",
                _output);
        }
    }

    [Theory]
    [MemberData(nameof(RunNames))]
    public async Task GoldenRunsGiveDiffusersPixelsAndPerStepTokens(string name)
    {
        var run = GoldenPipelineRuns.All(Fixtures.TinyGolden).Single(r => r.Name == name);
        var golden = Fixtures.LoadGolden(run.File);
        GenerateRequest request = StreamCollector.ToProto(run.Request);
        request.Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true };
        var events = await StreamCollector.ReadAllAsync(Client.Generate(request));

        StartedEvent started = events.Single(e => e.Started is not null).Started;
        Assert.Equal(run.Request.Seed, started.Seed);
        Assert.Equal(golden["step_timesteps"].data<long>().ToArray(), started.Timesteps);

        // Snapshot tokens are the pipeline's per-step samples.
        long[] steps = golden["step_samples"].data<long>().ToArray();
        int batch = run.Request.BatchSize;
        int pixels = (int)golden["step_samples"].shape[2];
        var snapshots = events.Where(e => e.Snapshot is not null).Select(e => e.Snapshot).ToList();
        Assert.Equal(run.Request.NumInferenceSteps * batch, snapshots.Count);
        foreach (SnapshotEvent s in snapshots)
        {
            long[] expected = steps.AsSpan(((s.CompletedSteps - 1) * batch * pixels) + (s.ImageIndex * pixels), pixels).ToArray();
            Assert.Equal(expected, s.Tokens.Select(t => (long)t));
        }

        byte[] pixelsUint8 = golden["images_uint8_nhwc"].data<byte>().ToArray();
        int size = pixelsUint8.Length / batch;
        var images = events.Where(e => e.Image is not null).Select(e => e.Image).ToList();
        Assert.Equal(batch, images.Count);
        foreach (ImageEvent image in images)
        {
            var decoded = ImageEncoder.DecodeRgb(image.Data.ToByteArray());
            PixelAssert.WithinDecoderRounding(pixelsUint8.AsSpan(image.Index * size, size), decoded.Rgb, $"{name} image {image.Index}", _output);
        }
    }

    [Theory]
    [InlineData(Grpc.V1.ImageFormat.Png, 0)]
    [InlineData(Grpc.V1.ImageFormat.Jpeg, 80)]
    [InlineData(Grpc.V1.ImageFormat.Webp, 0)]
    public async Task ImageBytesEqualTheLocalPipelinesBytes(Grpc.V1.ImageFormat format, int quality)
    {
        var request = new GenerationRequest { Prompts = ["a painting of a dog", "a red car"], NumInferenceSteps = 7, GuidanceScale = 3f, TruncationRate = 0.9f, Seed = 123 };
        GenerateRequest proto = StreamCollector.ToProto(request);
        proto.ImageFormat = format;
        proto.ImageQuality = quality;
        var events = await StreamCollector.ReadAllAsync(Client.Generate(proto));
        var remote = events.Where(e => e.Image is not null).Select(e => e.Image.Data.ToByteArray()).ToList();

        using var pipeline = VQDiffusionPipeline.FromPretrained(Fixtures.TinyModel);
        GenerationResult local = pipeline.Generate(request);
        var localFormat = format switch
        {
            Grpc.V1.ImageFormat.Jpeg => Model.Imaging.ImageFormat.Jpeg,
            Grpc.V1.ImageFormat.Webp => Model.Imaging.ImageFormat.WebP,
            _ => Model.Imaging.ImageFormat.Png,
        };
        // The server's files carry the request's parameters (ImageMetadataTests); encoded with the same ones, the bytes are equal.
        GenerationRequest resolved = pipeline.WithDefaults(request);
        var expected = local.Images.Select(i => ImageEncoder.Encode(
            i, localFormat, quality == 0 ? ImageEncoder.DefaultQuality : quality, GenerationParameters.For(resolved, local.Seed, i, new ModelProvenance("tiny-ithq")))).ToList();
        Assert.Equal(expected, remote);
        Assert.Equal(local.Images.Select(i => ImageEncoder.DecodeRgb(ImageEncoder.Encode(i, localFormat, quality == 0 ? ImageEncoder.DefaultQuality : quality)).Rgb), remote.Select(r => ImageEncoder.DecodeRgb(r).Rgb));
        Assert.Equal(ImageEncoder.MimeType(localFormat), events.First(e => e.Image is not null).Image.MimeType);
    }

    [Fact]
    public async Task UnsetSeedIsRandomReportedAndReproducible()
    {
        var request = new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 3 };
        var first = await StreamCollector.ReadAllAsync(Client.Generate(request));
        ulong seed = first.Single(e => e.Started is not null).Started.Seed;
        Assert.True(seed < (1UL << 53));
        request.Seed = seed;
        var again = await StreamCollector.ReadAllAsync(Client.Generate(request));
        Assert.Equal(first.Single(e => e.Image is not null).Image.Data, again.Single(e => e.Image is not null).Image.Data);
    }

    [Fact]
    public async Task DefaultsAreResolvedAndReported()
    {
        var events = await StreamCollector.ReadAllAsync(Client.Generate(new GenerateRequest { Prompts = { "a cat" }, Seed = 5 }));
        StartedEvent started = events.Single(e => e.Started is not null).Started;
        Assert.Equal((100, 5.0f, 1.0f, 1, 1), (started.NumInferenceSteps, started.GuidanceScale, started.TruncationRate, started.NumImagesPerPrompt, started.NumImages));
        Assert.Equal(100, events.Count(e => e.Progress is not null));
        Assert.Equal(Grpc.V1.ImageFormat.Png, started.ImageFormat);
        Assert.False(string.IsNullOrEmpty(started.RequestId));
    }

    [Fact]
    public async Task ClientRequestIdIsEchoed()
    {
        var events = await StreamCollector.ReadAllAsync(Client.Generate(new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 1, RequestId = "my-request-42" }));
        Assert.Equal("my-request-42", events.Single(e => e.Started is not null).Started.RequestId);
    }

    public static TheoryData<string, GenerateRequest, string> InvalidRequests() => new()
    {
        { "prompts", new GenerateRequest(), "at least one prompt" },
        { "prompts", WithPrompts(17), "at most 16" },
        { "prompts[0]", new GenerateRequest { Prompts = { new string('a', 2049) } }, "at most 2048 are allowed" },
        { "num_inference_steps", new GenerateRequest { Prompts = { "a" }, NumInferenceSteps = 101 }, "between 1 and 100" },
        { "num_inference_steps", new GenerateRequest { Prompts = { "a" }, NumInferenceSteps = -1 }, "between 1 and 100" },
        { "guidance_scale", new GenerateRequest { Prompts = { "a" }, GuidanceScale = float.NaN }, "finite number between 0 and 100" },
        { "guidance_scale", new GenerateRequest { Prompts = { "a" }, GuidanceScale = -0.5f }, "finite number between 0 and 100" },
        { "truncation_rate", new GenerateRequest { Prompts = { "a" }, TruncationRate = 0 }, "in (0, 1]" },
        { "truncation_rate", new GenerateRequest { Prompts = { "a" }, TruncationRate = 1.01f }, "in (0, 1]" },
        { "num_images_per_prompt", new GenerateRequest { Prompts = { "a" }, NumImagesPerPrompt = 9 }, "between 1 and 8" },
        { "num_images_per_prompt", new GenerateRequest { Prompts = { "a" }, NumImagesPerPrompt = -2 }, "between 1 and 8" },
        { "num_images_per_prompt", new GenerateRequest { Prompts = { "a", "b", "c" }, NumImagesPerPrompt = 8 }, "exceeds the limit of 16" },
        { "initial_latents", new GenerateRequest { Prompts = { "a" }, InitialLatents = { 1, 2, 3 } }, "1 × 8 × 8 = 64 values, got 3" },
        { "initial_latents", WithLatents(65), "values must be in 0..64" },
        { "initial_latents", WithLatents(-1), "values must be in 0..64" },
        { "image_format", new GenerateRequest { Prompts = { "a" }, ImageFormat = (Grpc.V1.ImageFormat)42 }, "IMAGE_FORMAT_PNG" },
        { "image_quality", new GenerateRequest { Prompts = { "a" }, ImageQuality = 101 }, "between 1 and 100" },
        { "image_quality", new GenerateRequest { Prompts = { "a" }, ImageQuality = -5 }, "between 1 and 100" },
        { "snapshots.every_n_steps", new GenerateRequest { Prompts = { "a" }, NumInferenceSteps = 5, Snapshots = new SnapshotOptions { EveryNSteps = 6 } }, "between 0 and num_inference_steps (5)" },
        { "snapshots.every_n_steps", new GenerateRequest { Prompts = { "a" }, Snapshots = new SnapshotOptions { IncludeTokens = true } }, "between 1 and num_inference_steps (100)" },
        { "snapshots.preview_format", new GenerateRequest { Prompts = { "a" }, Snapshots = new SnapshotOptions { EveryNSteps = 1, PreviewFormat = (Grpc.V1.ImageFormat)7 } }, "IMAGE_FORMAT_PNG" },
        { "snapshots.preview_quality", new GenerateRequest { Prompts = { "a" }, Snapshots = new SnapshotOptions { EveryNSteps = 1, PreviewQuality = 500 } }, "between 1 and 100" },
        { "request_id", new GenerateRequest { Prompts = { "a" }, RequestId = "has space" }, "printable ASCII" },
    };

    private static GenerateRequest WithPrompts(int count)
    {
        var r = new GenerateRequest();
        r.Prompts.AddRange(Enumerable.Repeat("x", count));
        return r;
    }

    private static GenerateRequest WithLatents(int value)
    {
        var r = new GenerateRequest { Prompts = { "a" } };
        r.InitialLatents.AddRange(Enumerable.Repeat(value, 64));
        return r;
    }

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public async Task InvalidRequestsGetInvalidArgumentNamingTheField(string field, GenerateRequest request, string rangeText)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(Client.Generate(request)));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains(rangeText, ex.Status.Detail);
        Google.Rpc.Status? status = ex.GetRpcStatus();
        Assert.NotNull(status);
        BadRequest? badRequest = status!.GetDetail<BadRequest>();
        Assert.NotNull(badRequest);
        Assert.Equal(field, Assert.Single(badRequest!.FieldViolations).Field);
        _output.WriteLine($"{field}: {ex.Status.Detail}");
    }

    [Fact]
    public async Task InvalidRequestsDoNotPoisonLaterOnes()
    {
        for (int i = 0; i < 5; i++)
        {
            await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(Client.Generate(new GenerateRequest { Prompts = { "a" }, TruncationRate = float.NaN })));
        }

        var events = await StreamCollector.ReadAllAsync(Client.Generate(new GenerateRequest { Prompts = { "a" }, NumInferenceSteps = 2 }));
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, events[^1].EventCase);
    }

    [Fact]
    public async Task GetModelInfoDescribesTheModel()
    {
        GetModelInfoResponse info = await Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.Equal("tiny-ithq", info.ModelId);
        Assert.Equal(Fixtures.TinyModel, info.ModelPath);
        Assert.False(info.IsBuiltinTestModel);
        Assert.Equal((8, 8, 32, 32), (info.LatentHeight, info.LatentWidth, info.ImageHeight, info.ImageWidth));
        Assert.Equal((64, 65, 100, 77), (info.NumCodes, info.NumVectorEmbeds, info.NumTrainTimesteps, info.MaxPromptTokens));
        Assert.Equal((100, 5.0f, 1.0f), (info.DefaultNumInferenceSteps, info.DefaultGuidanceScale, info.DefaultTruncationRate));
        Assert.Equal(("cpu", "float32"), (info.Device, info.Dtype));
        Assert.True(info.LearnedClassifierFreeEmbeddings);
        Assert.Matches(@"^\d+\.\d+\.\d+", info.ServerVersion);
        Assert.Equal((16, 2048, 8, 16, 16), (info.Limits.MaxPrompts, info.Limits.MaxPromptCharacters, info.Limits.MaxImagesPerPrompt, info.Limits.MaxBatchSize, info.Limits.MaxQueueLength));
    }
}
