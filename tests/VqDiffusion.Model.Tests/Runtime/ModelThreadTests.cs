using VqDiffusion.Model.Runtime;

namespace VqDiffusion.Model.Tests.Runtime;

public sealed class ModelThreadTests
{
    [Fact]
    public async Task WorkRunsInOrderOnOneDedicatedThreadWhenNobodyGivesOne()
    {
        using var modelThread = new ModelThread();
        var threads = new List<int>();
        var order = new List<int>();
        var tasks = Enumerable.Range(0, 5).Select(i => modelThread.Post(() =>
        {
            threads.Add(Environment.CurrentManagedThreadId);
            order.Add(i);
            return i * i;
        })).ToList();
        int[] results = await Task.WhenAll(tasks);

        Assert.Equal([0, 1, 4, 9, 16], results);
        Assert.Equal([0, 1, 2, 3, 4], order);
        Assert.Single(threads.Distinct());
        Assert.NotEqual(Environment.CurrentManagedThreadId, threads[0]);
        Assert.False(modelThread.OnMainThread);
        Assert.Equal(threads[0], modelThread.ThreadId);
    }

    [Fact]
    public async Task AReservedThreadRunsTheWorkPostedBeforeAndAfterItStartsUntilComplete()
    {
        using var modelThread = new ModelThread();
        modelThread.ReserveCallingThread();
        Task<int> early = modelThread.Post(() => Environment.CurrentManagedThreadId);
        await Task.Delay(50);
        Assert.False(early.IsCompleted); // nobody runs it until the caller gives its thread

        int runner = 0;
        var thread = new Thread(() =>
        {
            runner = Environment.CurrentManagedThreadId;
            modelThread.RunOnCurrentThread();
        });
        thread.Start();
        int earlyThread = await early.WaitAsync(TimeSpan.FromSeconds(10));
        int lateThread = await modelThread.Post(() => Environment.CurrentManagedThreadId).WaitAsync(TimeSpan.FromSeconds(10));
        modelThread.Complete();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "RunOnCurrentThread returns once completed and drained");

        Assert.Equal(runner, earlyThread);
        Assert.Equal(runner, lateThread);
        Assert.True(modelThread.OnMainThread);
    }

    [Fact]
    public async Task FailuresAndCancellationsReachTheCallerAndTheThreadGoesOn()
    {
        using var modelThread = new ModelThread();
        await Assert.ThrowsAsync<InvalidOperationException>(() => modelThread.Post(() => throw new InvalidOperationException("boom")));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => modelThread.Post(() => cts.Token.ThrowIfCancellationRequested()));
        Assert.Equal(42, await modelThread.Post(() => 42));

        modelThread.Complete();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => modelThread.Post(() => 1));
    }
}
