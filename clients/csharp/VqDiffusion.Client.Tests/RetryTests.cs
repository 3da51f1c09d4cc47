using System.Collections.Concurrent;
using Google.Protobuf;
using Grpc.Core;
using VqDiffusion.Client.Tests.TestSupport;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Client.Tests;

public sealed class RetryTests
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(10);

    private sealed class ManualGate : IModelLoadGate
    {
        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task WaitAsync(CancellationToken cancellationToken) => Open.Task.WaitAsync(cancellationToken);
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static VqDiffusionClientOptions Options(ConcurrentQueue<RetryAttempt> retries, int maxAttempts = 3, bool afterEvents = false) => new()
    {
        Retry = new VqDiffusionRetryOptions
        {
            MaxAttempts = maxAttempts,
            InitialBackoff = Short,
            MaxBackoff = Short,
            RetryGenerateAfterEvents = afterEvents,
            OnRetry = retries.Enqueue,
        },
    };

    private static GenerateResponse Started(ulong seed) => new()
    {
        Started = new StartedEvent { RequestId = "r", Prompts = { "a" }, NumInferenceSteps = 1, TotalSteps = 1, Seed = seed, NumImages = 1, Timesteps = { 0 } },
    };

    private static GenerateResponse Image(string data, ulong seed) => new()
    {
        Image = new ImageEvent { Index = 0, Data = ByteString.CopyFromUtf8(data), MimeType = "image/png", Width = 1, Height = 1, Seed = seed },
    };

    private static GenerateResponse Completed() => new() { Completed = new CompletedEvent { NumImages = 1 } };

    private static FakeReply Success(GenerateRequest request, string data) =>
        new([Started(request.Seed), new GenerateResponse { Progress = new ProgressEvent { CompletedSteps = 1, TotalSteps = 1 } }, Image(data, request.Seed), Completed()], StatusCode.OK);

    [Fact]
    public async Task AGenerateCallRefusedBeforeAnyEventIsRetriedWithBackoff()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync((attempt, request) => attempt switch
        {
            1 => new FakeReply([], StatusCode.ResourceExhausted, "the queue is full (16 requests waiting)"),
            2 => new FakeReply([], StatusCode.Unavailable, "the model is still loading"),
            _ => Success(request, "ok"),
        });
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries));

        GenerationOutput output = await client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a" }, Seed = 5 });

        Assert.Equal("ok"u8.ToArray(), Assert.Single(output.Images).Data);
        Assert.Equal(3, server.GenerateRequests.Count);
        Assert.Equal(
            [("Generate", 1, StatusCode.ResourceExhausted, false), ("Generate", 2, StatusCode.Unavailable, false)],
            retries.Select(r => (r.Method, r.Attempt, r.StatusCode, r.AfterEvents)).ToArray());
        Assert.Equal("the queue is full (16 requests waiting)", retries.First().Detail);
    }

    [Fact]
    public async Task RetriesStopAfterMaxAttemptsAndThrowTheLastStatus()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync((attempt, _) => new FakeReply([], StatusCode.Unavailable, $"down {attempt}"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries, maxAttempts: 4));

        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a" } }));

        Assert.Equal((StatusCode.Unavailable, "down 4"), (ex.StatusCode, ex.Detail));
        Assert.Equal(4, server.GenerateRequests.Count);
        Assert.Equal(3, retries.Count);
    }

    [Fact]
    public async Task StatusesThatAreNotRetryableFailAtOnce()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync((_, _) => new FakeReply([], StatusCode.InvalidArgument, "truncation_rate must be in (0, 1]"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries));

        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a" } }));

        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Single(server.GenerateRequests);
        Assert.Empty(retries);
    }

    [Fact]
    public async Task AStreamThatFailsAfterItsFirstEventsIsNotRetriedByDefault()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync((attempt, request) => attempt == 1
            ? new FakeReply([Started(9), Image("lost", 9)], StatusCode.Unavailable, "the replica went away")
            : Success(request, "second"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries));

        var seen = new List<GenerationEvent>();
        var ex = await Assert.ThrowsAsync<VqDiffusionException>(async () =>
        {
            await foreach (GenerationEvent e in client.GenerateAsync(new GenerateRequest { Prompts = { "a" } }))
            {
                seen.Add(e);
            }
        });

        Assert.Equal((StatusCode.Unavailable, "the replica went away"), (ex.StatusCode, ex.Detail));
        Assert.Collection(seen, e => Assert.IsType<GenerationEvent.Started>(e), e => Assert.IsType<GenerationEvent.ImageGenerated>(e));
        Assert.Single(server.GenerateRequests);
        Assert.Empty(retries);
    }

    [Fact]
    public async Task AStreamThatFailsWhileOnlyQueuedIsRetriedByDefault()
    {
        // What a replica that begins to shut down does to its queue: the queued request ends with UNAVAILABLE before
        // its run started, so sending it again loses nothing.
        await using var server = await FakeVqDiffusionServer.StartAsync((attempt, request) => attempt == 1
            ? new FakeReply([new GenerateResponse { Queued = new QueuedEvent { Position = 1, QueueLength = 1 } }], StatusCode.Unavailable, "the server is shutting down")
            : Success(request, "second"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries));

        var seen = new List<GenerationEvent>();
        await foreach (GenerationEvent e in client.GenerateAsync(new GenerateRequest { Prompts = { "a" } }))
        {
            seen.Add(e);
        }

        Assert.IsType<GenerationEvent.Queued>(seen[0]);
        Assert.IsType<GenerationEvent.Started>(seen[1]);
        Assert.Equal("second", System.Text.Encoding.UTF8.GetString(Assert.Single(seen.OfType<GenerationEvent.ImageGenerated>()).Data));
        Assert.Equal(2, server.GenerateRequests.Count);
        Assert.Equal((StatusCode.Unavailable, false), Assert.Single(retries) is var r ? (r.StatusCode, r.AfterEvents) : default);
    }

    [Fact]
    public async Task OptedInAStreamThatFailedAfterEventsRunsAgainWithTheSeedItReported()
    {
        // Odd attempts fail after two events, even ones succeed.
        await using var server = await FakeVqDiffusionServer.StartAsync((attempt, request) => attempt % 2 == 1
            ? new FakeReply([Started(777), Image("lost", 777)], StatusCode.Unavailable, "the replica went away")
            : Success(request, "second"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries, afterEvents: true));

        var starts = new List<ulong>();
        await foreach (GenerationEvent e in client.GenerateAsync(new GenerateRequest { Prompts = { "a" } }))
        {
            if (e is GenerationEvent.Started s)
            {
                starts.Add(s.Seed);
            }
        }

        GenerationOutput output = await client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a" } });

        // The stream restarts: a second Started, with the seed the lost run reported.
        Assert.Equal([777UL, 777UL], starts);
        GenerateRequest[] requests = server.GenerateRequests.ToArray();
        Assert.Equal(4, requests.Length);
        Assert.Equal([false, true, false, true], requests.Select(r => r.HasSeed).ToArray());
        Assert.Equal(777UL, requests[1].Seed);
        Assert.Equal(777UL, requests[3].Seed);
        Assert.Equal(requests[0].Prompts, requests[1].Prompts);
        Assert.Equal(2, retries.Count);
        Assert.All(retries, r => Assert.True(r.AfterEvents));
        // GenerateImagesAsync keeps only the images of the run that completed.
        Assert.Equal("second"u8.ToArray(), Assert.Single(output.Images).Data);
        Assert.Equal(777UL, output.Seed);
    }

    [Fact]
    public async Task AStreamResetAfterEventsCountsAsALostConnection()
    {
        // RST_STREAM INTERNAL_ERROR (0x2) after two events, once the client has read them: what nginx sends when the
        // replica of a started stream dies. Odd attempts are reset, even ones succeed.
        var read = new[] { NewSignal(), NewSignal() };
        await using var server = await FakeVqDiffusionServer.StartAsync((attempt, request) => attempt % 2 == 1
            ? new FakeReply([Started(5), Image("lost", 5)], StatusCode.OK, ResetWith: 2, BeforeEnd: () => read[attempt / 2].Task)
            : Success(request, "second"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var optedIn = new VqDiffusionClient(server.Address, Options(retries, afterEvents: true));
        using var plain = new VqDiffusionClient(server.Address, Options(new ConcurrentQueue<RetryAttempt>()));

        async Task<List<GenerationEvent>> ReadAsync(VqDiffusionClient client, TaskCompletionSource signal)
        {
            var events = new List<GenerationEvent>();
            await foreach (GenerationEvent e in client.GenerateAsync(new GenerateRequest { Prompts = { "a" } }))
            {
                events.Add(e);
                if (e is GenerationEvent.ImageGenerated)
                {
                    signal.TrySetResult();
                }
            }

            return events;
        }

        List<GenerationEvent> retried = await ReadAsync(optedIn, read[0]);
        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => ReadAsync(plain, read[1]));

        // Opted in: the run is repeated after the reset; its images follow the second Started.
        Assert.Equal(2, retried.OfType<GenerationEvent.Started>().Count());
        Assert.Equal(["lost", "second"], retried.OfType<GenerationEvent.ImageGenerated>().Select(i => System.Text.Encoding.UTF8.GetString(i.Data)).ToArray());
        RetryAttempt retry = Assert.Single(retries);
        Assert.Equal((StatusCode.Internal, true), (retry.StatusCode, retry.AfterEvents));
        Assert.Contains("reset the stream", retry.Detail, StringComparison.Ordinal);
        // Not opted in: the reset after events is thrown as it came.
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Equal(3, server.GenerateRequests.Count);
    }

    [Fact]
    public async Task AnInternalStatusFromTheServerIsNotRetried()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync((_, _) => new FakeReply([], StatusCode.Internal, "failure inside the model"));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries, afterEvents: true));

        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a" } }));

        Assert.Equal((StatusCode.Internal, "failure inside the model"), (ex.StatusCode, ex.Detail));
        Assert.Single(server.GenerateRequests);
        Assert.Empty(retries);
    }

    [Fact]
    public async Task GetModelInfoIsRetried()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync(modelInfo: attempt => attempt == 1
            ? new FakeReply([], StatusCode.Unavailable, "the model is still loading")
            : new FakeReply([new GetModelInfoResponse { ModelId = "fake" }], StatusCode.OK));
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var client = new VqDiffusionClient(server.Address, Options(retries));

        Assert.Equal("fake", (await client.GetModelInfoAsync()).ModelId);
        Assert.Equal(2, server.ModelInfoCalls);
        Assert.Equal(("GetModelInfo", StatusCode.Unavailable), (retries.Single().Method, retries.Single().StatusCode));
    }

    [Fact]
    public async Task WithRetriesOffTheFirstFailureIsThrown()
    {
        await using var server = await FakeVqDiffusionServer.StartAsync(modelInfo: _ => new FakeReply([], StatusCode.Unavailable, "down"));
        using var client = new VqDiffusionClient(server.Address, new VqDiffusionClientOptions { Retry = VqDiffusionRetryOptions.None });

        var ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GetModelInfoAsync());

        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Equal(1, server.ModelInfoCalls);
    }

    [Fact]
    public async Task ARealServerStillLoadingItsModelIsRetriedUntilItServes()
    {
        var gate = new ManualGate();
        await using var server = await RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}"], gate, waitForModel: false);
        var retries = new ConcurrentQueue<RetryAttempt>();
        var options = new VqDiffusionClientOptions
        {
            Retry = new VqDiffusionRetryOptions
            {
                MaxAttempts = 600,
                InitialBackoff = TimeSpan.FromMilliseconds(20),
                MaxBackoff = TimeSpan.FromMilliseconds(100),
                OnRetry = r =>
                {
                    retries.Enqueue(r);
                    gate.Open.TrySetResult(); // the first refusal has been seen: let the model load
                },
            },
        };
        using var client = new VqDiffusionClient(server.Address, options);

        GenerationOutput output = await client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = 2, Seed = 0 });

        Assert.Single(output.Images);
        Assert.NotEmpty(retries);
        Assert.All(retries, r => Assert.Equal((StatusCode.Unavailable, false), (r.StatusCode, r.AfterEvents)));
        Assert.Contains("still loading", retries.First().Detail);
    }

    [Fact]
    public void InvalidRetryOptionsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new VqDiffusionClient("http://127.0.0.1:1", new VqDiffusionClientOptions { Retry = new VqDiffusionRetryOptions { MaxAttempts = 0 } }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new VqDiffusionClient("http://127.0.0.1:1", new VqDiffusionClientOptions { Retry = new VqDiffusionRetryOptions { Jitter = 2 } }));
    }
}
