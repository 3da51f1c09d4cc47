using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

/// <summary>Per-caller limits (Generation:MaxQueuedPerCaller, Generation:MaxActivePerCaller) and the fewest-active-first order.</summary>
public sealed class FairnessTests
{
    private static string[] Settings(params string[] more) =>
    [
        $"--Model:Path={Fixtures.TinyModel}",
        "--Generation:MaxImagesPerPrompt=64",
        "--Generation:MaxBatchSize=128",
        .. more,
    ];

    /// <summary>Keeps the model busy for many seconds (see QueueAndCancellationTests).</summary>
    private static GenerateRequest Long() => new()
    {
        Prompts = { "a landscape with a lake", "an old train station" },
        NumImagesPerPrompt = 64,
        NumInferenceSteps = 100,
        Seed = 1,
    };

    private static GenerateRequest Short() => new() { Prompts = { "a cat" }, NumInferenceSteps = 2, Seed = 2 };

    private static Task<RunningServer> StartWithHeaderCallers(params string[] settings) =>
        RunningServer.StartAsync(Settings(settings), configure: s => s.AddSingleton<ICallerIdentity, HeaderCallerIdentity>());

    [Fact]
    public async Task OneCallerCannotFillTheQueue()
    {
        await using var server = await StartWithHeaderCallers("--Generation:MaxActiveRuns=1", "--Generation:MaxQueueLength=16", "--Generation:MaxQueuedPerCaller=2");
        var log = new List<string>();
        using var a = new TrackedCall(server.Client, "a", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "a:progress");
        using var b = new TrackedCall(server.Client, "b", Long(), log, HeaderCallerIdentity.As("x"));
        using var c = new TrackedCall(server.Client, "c", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "b:queued");
        await TrackedCall.WaitForAsync(log, "c:queued");

        using var d = new TrackedCall(server.Client, "d", Short(), log, HeaderCallerIdentity.As("x"));
        Status rejected = await d.Ended;
        Assert.Equal(StatusCode.ResourceExhausted, rejected.StatusCode);
        Assert.Contains("Generation:MaxQueuedPerCaller", rejected.Detail, StringComparison.Ordinal);
        Assert.Contains("caller x has reached Generation:MaxQueuedPerCaller (2 waiting)", rejected.Detail, StringComparison.Ordinal);

        // Another caller still gets in.
        using var e = new TrackedCall(server.Client, "e", Short(), log, HeaderCallerIdentity.As("y"));
        await TrackedCall.WaitForAsync(log, "e:queued");
        Assert.False(e.Ended.IsCompleted);
    }

    [Fact]
    public async Task ByDefaultTheCallerIsThePeerAddressAndTheMessageNamesTheLimit()
    {
        await using var server = await RunningServer.StartAsync(Settings("--Generation:MaxActiveRuns=1", "--Generation:MaxQueuedPerCaller=1"));
        var log = new List<string>();
        using var a = new TrackedCall(server.Client, "a", Long(), log);
        await TrackedCall.WaitForAsync(log, "a:progress");
        using var b = new TrackedCall(server.Client, "b", Long(), log);
        await TrackedCall.WaitForAsync(log, "b:queued");
        using var c = new TrackedCall(server.Client, "c", Short(), log);
        Status rejected = await c.Ended;
        Assert.Equal(StatusCode.ResourceExhausted, rejected.StatusCode);
        Assert.Equal("caller 127.0.0.1 has reached Generation:MaxQueuedPerCaller (1 waiting); retry when one has started", rejected.Detail);
    }

    [Fact]
    public async Task TheGlobalQueueLimitIsNamedToo()
    {
        await using var server = await StartWithHeaderCallers("--Generation:MaxActiveRuns=1", "--Generation:MaxQueueLength=1");
        var log = new List<string>();
        using var a = new TrackedCall(server.Client, "a", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "a:progress");
        using var b = new TrackedCall(server.Client, "b", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "b:queued");
        using var c = new TrackedCall(server.Client, "c", Short(), log, HeaderCallerIdentity.As("y"));
        Status rejected = await c.Ended;
        Assert.Equal(StatusCode.ResourceExhausted, rejected.StatusCode);
        Assert.Contains("queue is full", rejected.Detail, StringComparison.Ordinal);
        Assert.Contains("Generation:MaxQueueLength", rejected.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ACallerAtItsActiveLimitWaitsWhileOthersAreAdmitted()
    {
        await using var server = await StartWithHeaderCallers("--Generation:MaxActiveRuns=2", "--Generation:MaxActivePerCaller=1");
        var log = new List<string>();
        using var a = new TrackedCall(server.Client, "a", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "a:progress");
        using var b = new TrackedCall(server.Client, "b", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "b:queued");

        // A slot is free, but x is at its limit: y's later request takes it and completes while B waits.
        using var c = new TrackedCall(server.Client, "c", Short(), log, HeaderCallerIdentity.As("y"));
        Assert.Equal(StatusCode.OK, (await c.Ended.WaitAsync(TimeSpan.FromMinutes(1))).StatusCode);

        // When A goes, B starts (and not before).
        a.Cancel();
        await TrackedCall.WaitForAsync(log, "b:started");
        Assert.True(TrackedCall.IndexOf(log, "c:completed") < TrackedCall.IndexOf(log, "b:started"), string.Join(", ", log));
        Assert.True(TrackedCall.IndexOf(log, "a:cancel") < TrackedCall.IndexOf(log, "b:started"), string.Join(", ", log));
    }

    [Fact]
    public async Task AFreedSlotGoesToTheCallerWithFewestActiveRuns()
    {
        await using var server = await StartWithHeaderCallers("--Generation:MaxActiveRuns=2");
        var log = new List<string>();
        using var a = new TrackedCall(server.Client, "a", Long(), log, HeaderCallerIdentity.As("x"));
        using var b = new TrackedCall(server.Client, "b", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "a:progress");
        await TrackedCall.WaitForAsync(log, "b:progress");
        using var c = new TrackedCall(server.Client, "c", Long(), log, HeaderCallerIdentity.As("x"));
        await TrackedCall.WaitForAsync(log, "c:queued");
        using var d = new TrackedCall(server.Client, "d", Short(), log, HeaderCallerIdentity.As("y"));
        await TrackedCall.WaitForAsync(log, "d:queued");

        // C waited longer, but x has a run going and y none: D gets the slot.
        a.Cancel();
        Assert.Equal(StatusCode.OK, (await d.Ended.WaitAsync(TimeSpan.FromMinutes(1))).StatusCode);
        await TrackedCall.WaitForAsync(log, "c:started");
        Assert.True(TrackedCall.IndexOf(log, "d:started") < TrackedCall.IndexOf(log, "c:started"), string.Join(", ", log));
    }
}
