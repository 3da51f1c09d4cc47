using System.Collections.Concurrent;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// Several active runs advanced a step at a time in turn (Generation:MaxActiveRuns): order of events, identity with
/// solo runs, cancellation and failure of one run while the others go on.
/// </summary>
public sealed class InterleavingTests
{
    private readonly ITestOutputHelper _output;

    public InterleavingTests(ITestOutputHelper output) => _output = output;

    private static string[] Settings(int maxActiveRuns = 4, bool batched = false) =>
    [
        $"--Model:Path={Fixtures.TinyModel}",
        $"--Generation:MaxActiveRuns={maxActiveRuns}",
        $"--Generation:BatchedForwards={batched}",
        "--Generation:MaxImagesPerPrompt=64",
        "--Generation:MaxBatchSize=128",
    ];

    /// <summary>Long enough (64 images x 100 steps) that the short requests run while it is active.</summary>
    private static GenerateRequest Long(string id = "long") => new()
    {
        Prompts = { "a landscape with a lake" },
        NumImagesPerPrompt = 64,
        NumInferenceSteps = 100,
        Seed = 1,
        RequestId = id,
    };

    private static GenerateRequest Short(string id, ulong seed) => new()
    {
        Prompts = { "a photo of a cat", "a red car" },
        NumInferenceSteps = 10,
        GuidanceScale = 5,
        TruncationRate = 0.86f,
        Seed = seed,
        RequestId = id,
        Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true },
    };

    private static (List<byte[]> Images, List<int[]> Tokens) Outputs(IEnumerable<GenerateResponse> events)
    {
        var list = events.ToList();
        return (
            list.Where(e => e.Image is not null).Select(e => e.Image.Data.ToByteArray()).ToList(),
            list.Where(e => e.Snapshot is not null).Select(e => e.Snapshot.Tokens.ToArray()).ToList());
    }

    private static async Task<(List<byte[]> Images, List<int[]> Tokens)> SoloAsync(RunningServer server, GenerateRequest request)
    {
        using var call = server.Client.Generate(request);
        return Outputs(await StreamCollector.ReadAllAsync(call));
    }

    [Fact]
    public async Task ShortRequestBehindALongOneFinishesFirstWithTheImagesOfASoloRun()
    {
        var order = new ConcurrentQueue<(string Id, int Step)>();
        await using var server = await RunningServer.StartAsync(Settings(), configure: s => s.AddSingleton<IGenerationStepHook>(new RecordingHook(order)));

        using var longCall = new DrainedCall(server.Client, Long());
        await longCall.WaitForAsync(e => e.Progress?.CompletedSteps == 2);

        using var shortCall = server.Client.Generate(Short("short", 7));
        List<GenerateResponse> shortEvents = await StreamCollector.ReadAllAsync(shortCall);
        Assert.NotNull(shortEvents[^1].Completed);
        Assert.Equal(10, shortEvents.Count(e => e.Progress is not null));

        // The long run was still going when the short one completed: its steps interleaved.
        GenerateResponse longProgress = await longCall.WaitForAsync(e => e.Progress is not null);
        Assert.True(longProgress.Progress.CompletedSteps < 100, $"the long run was at step {longProgress.Progress.CompletedSteps} when the short one completed");
        var steps = order.ToArray();
        int firstShort = Array.FindIndex(steps, s => s.Id == "short");
        int lastShort = Array.FindLastIndex(steps, s => s.Id == "short");
        int longBetween = steps.Skip(firstShort).Take(lastShort - firstShort).Count(s => s.Id == "long");
        _output.WriteLine($"short run: steps {firstShort}..{lastShort} of the worker's sequence, {longBetween} long steps in between");
        Assert.InRange(longBetween, 8, 10); // strict alternation: one long step between two short ones
        longCall.Cancel();

        // Same request alone on an idle server: identical tokens at every step and identical image bytes.
        var interleaved = Outputs(shortEvents);
        var solo = await SoloAsync(server, Short("short-solo", 7));
        Assert.Equal(solo.Tokens.Count, interleaved.Tokens.Count);
        for (int i = 0; i < solo.Tokens.Count; i++)
        {
            Assert.Equal(solo.Tokens[i], interleaved.Tokens[i]);
        }

        Assert.Equal(2, interleaved.Images.Count);
        Assert.Equal(solo.Images, interleaved.Images);
    }

    [Fact]
    public async Task ConcurrentRequestsEachGiveTheirSoloImages()
    {
        await using var server = await RunningServer.StartAsync(Settings());
        var requests = Enumerable.Range(0, 4).Select(i => Short($"c{i}", (ulong)(100 + i))).ToList();
        var calls = requests.Select(r => server.Client.Generate(r)).ToList();
        var results = await Task.WhenAll(calls.Select(c => StreamCollector.ReadAllAsync(c)));
        foreach (var c in calls)
        {
            c.Dispose();
        }

        for (int i = 0; i < requests.Count; i++)
        {
            var solo = await SoloAsync(server, requests[i]);
            var together = Outputs(results[i]);
            Assert.Equal(solo.Tokens.Count, together.Tokens.Count);
            Assert.True(solo.Tokens.Zip(together.Tokens).All(p => p.First.SequenceEqual(p.Second)), $"request {i}: tokens differ from its solo run");
            Assert.Equal(solo.Images, together.Images);
        }
    }

    [Fact]
    public async Task BatchedForwardsServeConcurrentRequestsWithTheirSoloTokens()
    {
        await using var server = await RunningServer.StartAsync(Settings(batched: true));
        var requests = Enumerable.Range(0, 4).Select(i => Short($"b{i}", (ulong)(200 + i))).ToList();
        requests[1].GuidanceScale = 1; // a run without guidance shares the forward too
        requests[2].NumInferenceSteps = 6;
        var calls = requests.Select(r => server.Client.Generate(r)).ToList();
        var results = await Task.WhenAll(calls.Select(c => StreamCollector.ReadAllAsync(c)));
        calls.ForEach(c => c.Dispose());

        long same = 0;
        long total = 0;
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.NotNull(results[i][^1].Completed);
            Assert.Equal(requests[i].NumInferenceSteps, results[i].Count(e => e.Progress is not null));
            var together = Outputs(results[i]);
            Assert.Equal(2, together.Images.Count);
            var solo = await SoloAsync(server, requests[i]);
            Assert.Equal(solo.Tokens.Count, together.Tokens.Count);
            same += solo.Tokens.Zip(together.Tokens).Sum(p => p.First.Zip(p.Second).Count(t => t.First == t.Second));
            total += solo.Tokens.Sum(t => t.Length);
        }

        // Forwards were shared, and every request still got its solo tokens (measured: identical on the tiny model).
        long shared = server.Services.GetServices<IHostedService>().OfType<GenerationWorker>().Single().SharedForwards;
        _output.WriteLine($"batched forwards: {shared} shared forwards; {same} of {total} snapshot tokens identical to the solo runs");
        Assert.True(shared > 0, "no forward served more than one run");
        Assert.True(same >= total * 0.9, $"only {same} of {total} tokens agree with the solo runs");
    }

    [Fact]
    public async Task SharedForwardsAreSplitToStayWithinOneRequestsRows()
    {
        // MaxBatchSize 2 → at most 4 rows per forward: three guided one-image runs (2 rows each) go as 2 + 1.
        string[] settings = [.. Settings(batched: true).Where(a => !a.StartsWith("--Generation:MaxBatchSize", StringComparison.Ordinal)), "--Generation:MaxBatchSize=2"];
        await using var server = await RunningServer.StartAsync(settings);
        var requests = Enumerable.Range(0, 3).Select(i => new GenerateRequest
        {
            Prompts = { "a photo of a cat" },
            NumInferenceSteps = 8,
            GuidanceScale = 5,
            Seed = (ulong)(300 + i),
            RequestId = $"g{i}",
        }).ToList();
        var calls = requests.Select(r => server.Client.Generate(r)).ToList();
        var results = await Task.WhenAll(calls.Select(c => StreamCollector.ReadAllAsync(c)));
        calls.ForEach(c => c.Dispose());
        for (int i = 0; i < requests.Count; i++)
        {
            Assert.NotNull(results[i][^1].Completed);
            Assert.Equal((await SoloAsync(server, requests[i])).Images, Outputs(results[i]).Images);
        }

        Assert.True(server.Services.GetServices<IHostedService>().OfType<GenerationWorker>().Single().SharedForwards > 0);
    }

    [Fact]
    public async Task CancellingAnActiveRunLeavesTheOthersRunning()
    {
        await using var server = await RunningServer.StartAsync(Settings());
        using var cancelled = new DrainedCall(server.Client, Long("to-cancel"));
        await cancelled.WaitForAsync(e => e.Progress?.CompletedSteps == 1);
        using var other = new DrainedCall(server.Client, Short("other", 11));
        await other.WaitForAsync(e => e.Progress?.CompletedSteps == 2);

        cancelled.Cancel();
        var ex = await Assert.ThrowsAsync<RpcException>(() => cancelled.ReadToEndAsync());
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);

        List<GenerateResponse> rest = await other.ReadToEndAsync();
        Assert.NotNull(rest[^1].Completed);
        var solo = await SoloAsync(server, Short("other-solo", 11));
        Assert.Equal(solo.Images, Outputs(rest).Images);
    }

    [Fact]
    public async Task ARunThatFailsDoesNotFailTheOthers()
    {
        await using var server = await RunningServer.StartAsync(Settings(), configure: s => s.AddSingleton<IGenerationStepHook>(new FailingHook("doomed", atStep: 3)));
        using var doomed = new DrainedCall(server.Client, Short("doomed", 1));
        using var fine = new DrainedCall(server.Client, Short("fine", 2));

        var ex = await Assert.ThrowsAsync<RpcException>(() => doomed.ReadToEndAsync());
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains("doomed", ex.Status.Detail);

        List<GenerateResponse> rest = await fine.ReadToEndAsync();
        Assert.NotNull(rest[^1].Completed);
        Assert.Equal(2, rest.Count(e => e.Image is not null));

        // The server keeps serving.
        var after = await SoloAsync(server, Short("after", 2));
        Assert.Equal(after.Images, Outputs(rest).Images);
    }

    [Fact]
    public async Task WaitingRequestsKeepTheirQueuePositionsWhileRunsAreActive()
    {
        await using var server = await RunningServer.StartAsync(Settings(maxActiveRuns: 2));
        using var a = new DrainedCall(server.Client, Long("a"));
        await a.WaitForAsync(e => e.Progress is not null);
        using var b = new DrainedCall(server.Client, Long("b"));
        await b.WaitForAsync(e => e.Progress is not null);

        // Two active: the third waits at position 1 and starts when one of them ends.
        using var c = new DrainedCall(server.Client, Short("c", 3));
        GenerateResponse queued = await c.WaitForAsync(e => e.Queued is not null);
        Assert.Equal(1, queued.Queued.Position);
        a.Cancel();
        GenerateResponse started = await c.WaitForAsync(e => e.Started is not null);
        Assert.Equal("c", started.Started.RequestId);
        List<GenerateResponse> rest = await c.ReadToEndAsync();
        Assert.NotNull(rest[^1].Completed);
        b.Cancel();
    }

    private sealed class RecordingHook(ConcurrentQueue<(string, int)> order) : IGenerationStepHook
    {
        public void BeforeStep(string requestId, int completedSteps, int totalSteps) => order.Enqueue((requestId, completedSteps));
    }

    private sealed class FailingHook(string requestId, int atStep) : IGenerationStepHook
    {
        public void BeforeStep(string id, int completedSteps, int totalSteps)
        {
            if (id == requestId && completedSteps == atStep)
            {
                throw new InvalidOperationException("injected failure");
            }
        }
    }
}
