using System.Diagnostics;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>The bounded queue, cancellation and deadlines, each on its own server.</summary>
public sealed class QueueAndCancellationTests
{
    private readonly ITestOutputHelper _output;

    public QueueAndCancellationTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// Settings for these tests' servers: the tiny model, and limits raised so that <see cref="Long"/>
    /// (128 images x 100 steps) keeps the model busy for many seconds even on a fast machine; the tests
    /// must not depend on how quickly the test thread gets scheduled.
    /// </summary>
    private static string[] Settings(int maxQueueLength = 16) =>
    [
        $"--Model:Path={Fixtures.TinyModel}",
        $"--Generation:MaxQueueLength={maxQueueLength}",
        "--Generation:MaxActiveRuns=1", // one run at a time: the queue's behaviour on its own (interleaving: InterleavingTests)
        "--Generation:MaxImagesPerPrompt=64",
        "--Generation:MaxBatchSize=128",
    ];

    private static GenerateRequest Long() => new()
    {
        Prompts = { "a landscape with a lake", "an old train station" },
        NumImagesPerPrompt = 64,
        NumInferenceSteps = 100,
        Seed = 1,
    };

    private static async Task<GenerateResponse> ReadUntilAsync(IAsyncStreamReader<GenerateResponse> stream, Func<GenerateResponse, bool> predicate)
    {
        while (await stream.MoveNext())
        {
            if (predicate(stream.Current))
            {
                return stream.Current;
            }
        }

        throw new InvalidOperationException("stream ended before the expected event");
    }

    [Fact]
    public async Task FullQueueRejectsWithResourceExhaustedAndPositionsAreReported()
    {
        await using var server = await RunningServer.StartAsync(Settings(maxQueueLength: 1));
        using var a = new DrainedCall(server.Client, Long());
        await a.WaitForAsync(e => e.Progress is not null);

        using var b = new DrainedCall(server.Client, Long());
        GenerateResponse queued = await b.WaitForAsync(e => e.Queued is not null);
        Assert.Equal((1, 1), (queued.Queued.Position, queued.Queued.QueueLength));

        using var c = new DrainedCall(server.Client, new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 1 });
        var ex = await Assert.ThrowsAsync<RpcException>(() => c.ReadToEndAsync());
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Contains("queue is full", ex.Status.Detail);

        // When A goes, B starts.
        a.Cancel();
        GenerateResponse started = await b.WaitForAsync(e => e.Started is not null);
        Assert.True(started.Started.QueueWait.ToTimeSpan() > TimeSpan.Zero);
    }

    [Fact]
    public async Task CancelMidStreamStopsTheWorkAndFreesTheModel()
    {
        await using var server = await RunningServer.StartAsync(Settings());
        using var cts = new CancellationTokenSource();
        using var a = server.Client.Generate(Long(), cancellationToken: cts.Token);
        GenerateResponse third = await ReadUntilAsync(a.ResponseStream, e => e.Progress?.CompletedSteps == 3);
        TimeSpan perStep = third.Progress.Elapsed.ToTimeSpan() / 3;
        cts.Cancel();
        var ex = await Assert.ThrowsAnyAsync<Exception>(() => a.ResponseStream.MoveNext());
        Assert.True(ex is RpcException { StatusCode: StatusCode.Cancelled } or OperationCanceledException, ex.ToString());

        var clock = Stopwatch.StartNew();
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 2, Seed = 3 }));
        TimeSpan queueWait = events.Single(e => e.Started is not null).Started.QueueWait.ToTimeSpan();
        TimeSpan restOfA = perStep * 97;
        _output.WriteLine($"A: {perStep.TotalMilliseconds:F1} ms/step, would have needed {restOfA.TotalMilliseconds:F0} ms more; next request waited {queueWait.TotalMilliseconds:F0} ms, finished in {clock.ElapsedMilliseconds} ms");
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, events[^1].EventCase);
        Assert.True(queueWait < restOfA / 2, $"the next request waited {queueWait}, as if the cancelled one kept running ({restOfA} left)");
    }

    [Fact]
    public async Task DeadlineStopsTheWorkAndTheNextRequestSucceeds()
    {
        await using var server = await RunningServer.StartAsync(Settings());
        var progress = new List<ProgressEvent>();
        using var a = server.Client.Generate(Long(), deadline: DateTime.UtcNow.AddMilliseconds(1500));
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (GenerateResponse e in a.ResponseStream.ReadAllAsync())
            {
                if (e.Progress is not null)
                {
                    progress.Add(e.Progress);
                }
            }
        });
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);

        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 2 }));
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, events[^1].EventCase);
        TimeSpan queueWait = events.Single(e => e.Started is not null).Started.QueueWait.ToTimeSpan();

        // Had A kept running after its deadline, the next request would wait for its remaining steps.
        TimeSpan perStep = progress.Count > 0 ? progress[^1].Elapsed.ToTimeSpan() / progress.Count : TimeSpan.FromSeconds(1);
        TimeSpan restOfA = perStep * (100 - progress.Count);
        _output.WriteLine($"A did {progress.Count} steps ({perStep.TotalMilliseconds:F0} ms each) before its deadline; the next request waited {queueWait.TotalMilliseconds:F0} ms of the {restOfA.TotalMilliseconds:F0} ms A would have needed");
        Assert.True(queueWait < restOfA / 2, $"waited {queueWait}, as if the expired request kept running ({restOfA} left)");
    }

    [Fact]
    public async Task CancelWhileQueuedRemovesTheRequestAndUpdatesPositions()
    {
        await using var server = await RunningServer.StartAsync(Settings(maxQueueLength: 4));
        using var a = new DrainedCall(server.Client, Long());
        await a.WaitForAsync(e => e.Progress is not null);

        using var b = new DrainedCall(server.Client, Long());
        Assert.Equal(1, (await b.WaitForAsync(e => e.Queued is not null)).Queued.Position);
        using var c = new DrainedCall(server.Client, new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 1 });
        Assert.Equal(2, (await c.WaitForAsync(e => e.Queued is not null)).Queued.Position);

        b.Cancel();
        GenerateResponse moved = await c.WaitForAsync(e => e.Queued is not null);
        Assert.Equal((1, 1), (moved.Queued.Position, moved.Queued.QueueLength));
        a.Cancel();
        GenerateResponse last = await c.WaitForAsync(e => e.Completed is not null);
        Assert.Equal(1, last.Completed.NumImages);
    }
}
