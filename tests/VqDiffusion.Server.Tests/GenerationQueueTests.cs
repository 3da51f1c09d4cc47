using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging.Abstractions;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Tests;

/// <summary>The queue on its own: per-caller and global limits, the fairness order, closing on shutdown, registrations.</summary>
public sealed class GenerationQueueTests
{
    private static GenerationQueue Queue(int capacity = 16, int perCaller = 0) =>
        new(Microsoft.Extensions.Options.Options.Create(new GenerationOptions { MaxQueueLength = capacity, MaxQueuedPerCaller = perCaller }), NullLogger<GenerationQueue>.Instance);

    private static GenerationJob Job(string id, string caller, CancellationToken cancellationToken = default) =>
        new(id, new GenerationRequest { Prompts = ["a"] }, ImageFormat.Png, 90, SnapshotSettings.None, cancellationToken) { Caller = caller };

    [Fact]
    public void PerCallerAndGlobalLimitsNameTheirKey()
    {
        GenerationQueue queue = Queue(capacity: 3, perCaller: 2);
        queue.Enqueue(Job("a", "x"));
        queue.Enqueue(Job("b", "x"));
        var perCaller = Assert.Throws<QueueFullException>(() => queue.Enqueue(Job("c", "x")));
        Assert.Equal(("Generation:MaxQueuedPerCaller", 2), (perCaller.Limit, perCaller.Capacity));
        queue.Enqueue(Job("d", "y"));
        var global = Assert.Throws<QueueFullException>(() => queue.Enqueue(Job("e", "z")));
        Assert.Equal(("Generation:MaxQueueLength", 3), (global.Limit, global.Capacity));
        Assert.Contains("queue is full", global.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheNextJobHasTheLowestPriorityTheOldestAmongEqualsAndNullIsPassedOver()
    {
        GenerationQueue queue = Queue();
        queue.Enqueue(Job("a", "x"));
        queue.Enqueue(Job("b", "x"));
        queue.Enqueue(Job("c", "y"));
        queue.Enqueue(Job("d", "y"));

        // x has one run going, y none: y's oldest first.
        Assert.True(queue.TryTakeNext(j => j.Caller == "x" ? 1 : 0, out GenerationJob? first));
        Assert.Equal("c", first.RequestId);

        // y at its active limit: passed over, keeps its place.
        Assert.True(queue.TryTakeNext(j => j.Caller == "y" ? null : 0, out GenerationJob? second));
        Assert.Equal("a", second.RequestId);
        Assert.False(queue.TryTakeNext(_ => null, out _));
        Assert.Equal(2, queue.Count);
        Assert.True(queue.TryTake(out GenerationJob? third));
        Assert.Equal("b", third.RequestId);
    }

    [Fact]
    public async Task CloseEndsEveryWaitingJobAndRefusesNewOnes()
    {
        GenerationQueue queue = Queue();
        GenerationJob a = Job("a", "x");
        GenerationJob b = Job("b", "y");
        queue.Enqueue(a);
        queue.Enqueue(b);

        Assert.Equal(2, queue.Close());
        foreach (GenerationJob job in new[] { a, b })
        {
            Assert.True(job.Events.TryRead(out GenerationEvent? queued) && queued is QueuedEvent);
            var ex = await Assert.ThrowsAsync<ServerShuttingDownException>(() => job.Events.Completion);
            Assert.Contains("shutting down", ex.Message, StringComparison.Ordinal);
        }

        Assert.Equal(0, queue.Count);
        Assert.Throws<ServerShuttingDownException>(() => queue.Enqueue(Job("c", "x")));
        Assert.False(queue.TryTake(out _));
    }

    [Fact]
    public void AJobThatLeftTheQueueIsNotHeldByItsCancellationRegistration()
    {
        // One token outliving many jobs (e.g. a long-lived caller token): each job's registration must go with the job.
        using var cts = new CancellationTokenSource();
        GenerationQueue queue = Queue();
        WeakReference taken = EnqueueAndTake(queue, cts.Token);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.False(taken.IsAlive, "the taken job is still referenced by its cancellation registration");

        // Cancelling afterwards does nothing to the queue.
        cts.Cancel();
        Assert.Equal(0, queue.Count);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference EnqueueAndTake(GenerationQueue queue, CancellationToken token)
    {
        queue.Enqueue(Job("a", "x", token));
        Assert.True(queue.TryTake(out GenerationJob? job));
        return new WeakReference(job);
    }
}
