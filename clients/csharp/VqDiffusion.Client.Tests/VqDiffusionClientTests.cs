using System.Diagnostics;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Client.Tests;

public sealed class VqDiffusionClientTests : IClassFixture<SharedServerFixture>
{
    private readonly SharedServerFixture _fixture;
    private readonly ITestOutputHelper _output;

    public VqDiffusionClientTests(SharedServerFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    private VqDiffusionClient NewClient() => new(_fixture.Server.Address);

    private static GenerateRequest SingleCfg() => new()
    {
        Prompts = { "a photo of a cat" },
        NumInferenceSteps = 10,
        GuidanceScale = 5,
        TruncationRate = 1,
        Seed = 0,
    };

    /// <summary>Collects reports synchronously (Progress&lt;T&gt; would post them to the thread pool).</summary>
    private sealed class Recorder<T> : IProgress<T>
    {
        public List<T> Reports { get; } = [];

        public void Report(T value)
        {
            lock (Reports)
            {
                Reports.Add(value);
            }
        }
    }

    [Fact]
    public async Task GenerateImagesMatchesTheGoldenPng()
    {
        using var client = NewClient();
        var progress = new Recorder<GenerationProgress>();
        GenerationOutput output = await client.GenerateImagesAsync(SingleCfg(), progress);

        Assert.Equal(0UL, output.Seed);
        var image = Assert.Single(output.Images);
        Assert.Equal((0, 0, "image/png", 0UL), (image.Index, image.PromptIndex, image.MimeType, image.Seed));
        var expected = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "png", "pipeline_single_cfg_0.png")));
        var actual = ImageEncoder.DecodeRgb(image.Data);
        Assert.Equal((expected.Width, expected.Height), (actual.Width, actual.Height));
        Assert.Equal((expected.Width, expected.Height), (image.Width, image.Height));
        PixelAssert.WithinDecoderRounding(expected.Rgb, actual.Rgb, "client single_cfg 0", _output);

        Assert.Equal(Enumerable.Range(1, 10), progress.Reports.Where(p => p.Stage == GenerationStage.Denoising).Select(p => p.CompletedSteps));
        Assert.All(progress.Reports.Where(p => p.Stage == GenerationStage.Denoising), p => Assert.Equal(10, p.TotalSteps));
        Assert.Equal(GenerationStage.Started, progress.Reports.First(p => p.Stage != GenerationStage.Queued).Stage);
        Assert.Equal(GenerationStage.Completed, progress.Reports[^1].Stage);
        Assert.Equal(10, output.Started.Timesteps.Count);
        Assert.Equal(1, output.Completed.NumImages);
        Assert.Equal(0, output.Completed.DroppedEvents); // this client kept up
    }

    [Fact]
    public async Task GenerateAsyncYieldsTypedEventsInStreamOrder()
    {
        using var client = NewClient();
        var events = new List<GenerationEvent>();
        await foreach (GenerationEvent e in client.GenerateAsync(SingleCfg()))
        {
            events.Add(e);
        }

        var started = Assert.IsType<GenerationEvent.Started>(events.SkipWhile(e => e is GenerationEvent.Queued).First());
        Assert.Equal(0UL, started.Seed);
        Assert.Equal(["a photo of a cat"], started.Prompts);
        Assert.Equal(10, started.NumInferenceSteps);
        Assert.Equal(5f, started.GuidanceScale);

        var steps = events.OfType<GenerationEvent.Progress>().ToList();
        Assert.Equal(Enumerable.Range(1, 10), steps.Select(p => p.CompletedSteps));
        Assert.Equal(started.Timesteps, steps.Select(p => p.Timestep));
        Assert.All(steps, p => Assert.Equal(10, p.TotalSteps));
        Assert.True(steps.Zip(steps.Skip(1)).All(pair => pair.First.Elapsed <= pair.Second.Elapsed));

        Assert.IsType<GenerationEvent.ImageGenerated>(events[^2]);
        var completed = Assert.IsType<GenerationEvent.Completed>(events[^1]);
        Assert.Equal(1, completed.NumImages);
        Assert.True(completed.GenerationTime > TimeSpan.Zero);
    }

    [Fact]
    public async Task CancellingTheTokenMidStreamThrowsOperationCanceledAndTheServerStaysUsable()
    {
        using var client = NewClient();
        var request = new GenerateRequest
        {
            Prompts = { "a landscape with a lake", "an old train station" },
            NumImagesPerPrompt = 8,
            NumInferenceSteps = 100,
            Seed = 1,
        };
        using var cts = new CancellationTokenSource();
        int progressEvents = 0;
        var clock = Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (GenerationEvent e in client.GenerateAsync(request, cts.Token))
            {
                if (e is GenerationEvent.Progress && ++progressEvents == 3)
                {
                    cts.Cancel();
                }

                Assert.IsNotType<GenerationEvent.Completed>(e);
            }
        });
        Assert.Equal(3, progressEvents);
        _output.WriteLine($"cancelled after {clock.ElapsedMilliseconds} ms");

        // IProgress variant: cancelled by the token as well.
        using var cts2 = new CancellationTokenSource();
        var cancelOnThird = new CancelAfter(cts2, 3);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GenerateImagesAsync(request, cancelOnThird, cts2.Token));

        GenerationOutput next = await client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 2, Seed = 3 });
        Assert.Single(next.Images);
        Assert.Equal(3UL, next.Seed);
    }

    private sealed class CancelAfter(CancellationTokenSource cts, int steps) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value)
        {
            if (value.Stage == GenerationStage.Denoising && value.CompletedSteps == steps)
            {
                cts.Cancel();
            }
        }
    }

    [Fact]
    public async Task InvalidArgumentCarriesTheFieldViolation()
    {
        using var client = NewClient();
        var request = SingleCfg();
        request.TruncationRate = 2;
        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GenerateImagesAsync(request));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        var violation = Assert.Single(ex.FieldViolations);
        Assert.Equal("truncation_rate", violation.Field);
        Assert.Contains("truncation_rate must be in (0, 1]", violation.Description);
        Assert.Contains("truncation_rate", ex.Detail);
        var inner = Assert.IsType<RpcException>(ex.InnerException);
        Assert.Equal(StatusCode.InvalidArgument, inner.StatusCode);

        // The same through the event stream.
        var streamEx = await Assert.ThrowsAsync<VqDiffusionException>(async () =>
        {
            await foreach (GenerationEvent unused in client.GenerateAsync(request))
            {
            }
        });
        Assert.Equal("truncation_rate", streamEx.FieldViolations[0].Field);
    }

    [Fact]
    public async Task GetModelInfoDescribesTheTinyModel()
    {
        using var client = NewClient();
        GetModelInfoResponse info = await client.GetModelInfoAsync();
        Assert.Equal("tiny-ithq", info.ModelId);
        Assert.False(info.IsBuiltinTestModel);
        Assert.Equal(32, info.ImageWidth);
        Assert.Equal(info.NumCodes + 1, info.NumVectorEmbeds);
        Assert.Equal(100, info.DefaultNumInferenceSteps);
        Assert.Equal(8, info.Limits.MaxImagesPerPrompt);
    }

    [Fact]
    public async Task AClientOverAnExistingChannelLeavesTheChannelOpen()
    {
        using (var client = new VqDiffusionClient(_fixture.Server.Channel))
        {
            Assert.Equal("tiny-ithq", (await client.GetModelInfoAsync()).ModelId);
        }

        using var again = new VqDiffusionClient(_fixture.Server.Channel);
        Assert.Equal("tiny-ithq", (await again.GetModelInfoAsync()).ModelId);
    }

    [Fact]
    public async Task NoServerIsUnavailable()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        using var client = new VqDiffusionClient($"http://127.0.0.1:{port}");
        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GetModelInfoAsync());
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Empty(ex.FieldViolations);
    }

    [Fact]
    public async Task DeadlineExceededIsReported()
    {
        using var client = NewClient();
        var request = new GenerateRequest { Prompts = { "a cat" }, NumImagesPerPrompt = 8, NumInferenceSteps = 100, Seed = 1 };
        var ex = await Assert.ThrowsAsync<VqDiffusionException>(async () =>
        {
            await foreach (GenerationEvent unused in client.GenerateAsync(request, deadline: DateTime.UtcNow.AddMilliseconds(200)))
            {
            }
        });
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
    }

    /// <summary>
    /// The standard cross-client request; with VQD_CROSS_CLIENT_OUT set, its PNGs are written to
    /// <c>$VQD_CROSS_CLIENT_OUT.0</c> and <c>.1</c> for comparison with the other clients.
    /// </summary>
    [Fact]
    public async Task StandardCrossClientRequest()
    {
        using var client = NewClient();
        var request = new GenerateRequest
        {
            Prompts = { "a photo of a cat", "a red car" },
            NumInferenceSteps = 7,
            GuidanceScale = 3,
            TruncationRate = 0.9f,
            NumImagesPerPrompt = 1,
            Seed = 123,
            ImageFormat = VqDiffusion.Grpc.V1.ImageFormat.Png,
        };
        GenerationOutput output = await client.GenerateImagesAsync(request);
        Assert.Equal([0, 1], output.Images.Select(i => i.Index));
        Assert.Equal([0, 1], output.Images.Select(i => i.PromptIndex));
        Assert.All(output.Images, i => Assert.Equal("image/png", i.MimeType));
        Assert.All(output.Images, i => Assert.Equal(32, ImageEncoder.DecodeRgb(i.Data).Width));

        string? prefix = Environment.GetEnvironmentVariable("VQD_CROSS_CLIENT_OUT");
        if (!string.IsNullOrEmpty(prefix))
        {
            foreach (var image in output.Images)
            {
                await File.WriteAllBytesAsync($"{prefix}.{image.Index}", image.Data);
            }

            _output.WriteLine($"wrote {prefix}.0 and {prefix}.1");
        }
    }
}
