using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Tests;

/// <summary>The bounded, coalescing event buffer between the model thread and one response stream.</summary>
public sealed class GenerationEventBufferTests
{
    private static ProgressEvent Progress(int step) => new(step, 100, 1000 - step, TimeSpan.FromMilliseconds(step));

    private static SnapshotEvent Snapshot(int step, int image, int previewBytes = 1000) =>
        new(step, 1000 - step, image, 8, 8, new int[64], 10, new byte[previewBytes], "image/png");

    private static ImageEvent Image(int index, int bytes = 50_000) => new(index, 0, new byte[bytes], "image/png", 32, 32, 7);

    private static CompletedEvent Completed() => new(TimeSpan.Zero, TimeSpan.FromSeconds(1), TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(5), 2);

    private static List<GenerationEvent> Drain(GenerationEventBuffer buffer)
    {
        var list = new List<GenerationEvent>();
        while (buffer.TryRead(out GenerationEvent? e))
        {
            list.Add(e);
        }

        return list;
    }

    [Fact]
    public void UnderTheBudgetEveryEventIsKeptInOrder()
    {
        var buffer = new GenerationEventBuffer();
        var posted = new List<GenerationEvent> { new QueuedEvent(2, 2), new QueuedEvent(1, 1), new StartedEvent(7, [999, 998], TimeSpan.Zero) };
        for (int step = 1; step <= 50; step++)
        {
            posted.Add(Progress(step));
            posted.Add(Snapshot(step, 0));
            posted.Add(Snapshot(step, 1));
        }

        posted.Add(Image(0));
        posted.Add(Image(1));
        posted.ForEach(e => Assert.True(buffer.Post(e)));
        buffer.Post(Completed());

        List<GenerationEvent> read = Drain(buffer);
        Assert.Equal(posted, read.Take(posted.Count));
        Assert.Equal(0, Assert.IsType<CompletedEvent>(read[^1]).DroppedEvents);
        Assert.Equal(0, buffer.DroppedEvents);
    }

    [Fact]
    public void OverTheBudgetTheLatestProgressAndSnapshotOfEachImageReplaceTheUnsentOnes()
    {
        // Room for about two snapshots: from then on, each kind (and image) keeps only its latest unsent event.
        var buffer = new GenerationEventBuffer(budgetBytes: 2500);
        buffer.Post(new StartedEvent(7, [3, 2, 1], TimeSpan.Zero));
        for (int step = 1; step <= 30; step++)
        {
            buffer.Post(Progress(step));
            buffer.Post(Snapshot(step, 0));
            buffer.Post(Snapshot(step, 1));
        }

        buffer.Post(Image(0));
        buffer.Post(Image(1));
        buffer.Post(Completed());
        Assert.True(buffer.Complete());

        List<GenerationEvent> read = Drain(buffer);
        Assert.IsType<StartedEvent>(read[0]);
        Assert.Equal(new[] { 0, 1 }, read.OfType<ImageEvent>().Select(i => i.Index));
        var completed = Assert.IsType<CompletedEvent>(read[^1]);

        var progress = read.OfType<ProgressEvent>().Select(p => p.CompletedSteps).ToList();
        Assert.Equal(30, progress[^1]);
        Assert.Equal(progress.Order(), progress);
        foreach (int image in new[] { 0, 1 })
        {
            var snapshots = read.OfType<SnapshotEvent>().Where(s => s.ImageIndex == image).Select(s => s.CompletedSteps).ToList();
            Assert.Equal(30, snapshots[^1]);
            Assert.Equal(snapshots.Order(), snapshots);
        }

        // Every coalesced event is counted once, on the buffer and on the completed event.
        int intermediate = read.Count(e => e is ProgressEvent or SnapshotEvent);
        Assert.Equal(90 - intermediate, buffer.DroppedEvents);
        Assert.Equal(buffer.DroppedEvents, completed.DroppedEvents);
        Assert.True(buffer.DroppedEvents >= 80, $"only {buffer.DroppedEvents} dropped");

        // A step's events keep their order: after coalescing, the progress of step 30 comes before its snapshots.
        int lastProgress = read.FindIndex(e => e is ProgressEvent { CompletedSteps: 30 });
        Assert.True(read.Skip(lastProgress).OfType<SnapshotEvent>().Count(s => s.CompletedSteps == 30) == 2);
    }

    [Fact]
    public void ImagesAndCompletedAreNeverDroppedAndMemoryStaysBoundedWithoutAReader()
    {
        var buffer = new GenerationEventBuffer(budgetBytes: 64 * 1024);
        long bound = 0;
        for (int step = 1; step <= 10_000; step++)
        {
            Assert.True(buffer.Post(Progress(step)));
            for (int image = 0; image < 16; image++)
            {
                Assert.True(buffer.Post(Snapshot(step, image, previewBytes: 3000)));
            }

            bound = Math.Max(bound, buffer.BufferedBytes);
        }

        // It fills up to the budget, then each key (progress, 16 snapshots) holds its latest: at most one event per
        // key past the budget.
        long perKey = GenerationEventBuffer.SizeOf(Snapshot(1, 0, previewBytes: 3000));
        Assert.InRange(bound, (64 * 1024) - perKey, (64 * 1024) + (17 * perKey));
        Assert.Equal(bound, buffer.PeakBufferedBytes);

        // Sixteen 1 MB images far over the budget: all kept.
        for (int i = 0; i < 16; i++)
        {
            buffer.Post(Image(i, bytes: 1 << 20));
        }

        buffer.Post(Completed());
        buffer.Complete();
        List<GenerationEvent> read = Drain(buffer);
        Assert.Equal(Enumerable.Range(0, 16), read.OfType<ImageEvent>().Select(i => i.Index));
        Assert.IsType<CompletedEvent>(read[^1]);
        Assert.Equal(10_000, read.OfType<ProgressEvent>().Last().CompletedSteps);
        Assert.Equal(0, buffer.BufferedBytes);
    }

    [Fact]
    public void QueuedPositionsCoalesceToo()
    {
        var buffer = new GenerationEventBuffer(budgetBytes: 0);
        for (int position = 10; position >= 1; position--)
        {
            buffer.Post(new QueuedEvent(position, position));
        }

        var read = Drain(buffer);
        Assert.Equal(new QueuedEvent(1, 1), Assert.Single(read));
        Assert.Equal(9, buffer.DroppedEvents);
    }

    [Fact]
    public async Task TheReaderGetsThePendingEventsThenTheError()
    {
        var buffer = new GenerationEventBuffer();
        buffer.Post(Progress(1));
        buffer.Post(Progress(2));
        var failure = new GenerationFailedException("r1", new InvalidOperationException("boom"));
        Assert.True(buffer.Complete(failure));
        Assert.False(buffer.Complete());
        Assert.False(buffer.Post(Progress(3)));

        var read = new List<GenerationEvent>();
        var thrown = await Assert.ThrowsAsync<GenerationFailedException>(async () =>
        {
            await foreach (GenerationEvent e in buffer.ReadAllAsync())
            {
                read.Add(e);
            }
        });
        Assert.Same(failure, thrown);
        Assert.Equal(new GenerationEvent[] { Progress(1), Progress(2) }, read);
        await Assert.ThrowsAsync<GenerationFailedException>(() => buffer.Completion);
    }

    [Fact]
    public async Task AWaitingReaderIsWokenByAPostAndCanBeCancelled()
    {
        var buffer = new GenerationEventBuffer();
        using var cts = new CancellationTokenSource();
        ValueTask<bool> cancelled = buffer.WaitToReadAsync(cts.Token);
        Assert.False(cancelled.IsCompleted);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await cancelled);

        Task<bool> waiting = buffer.WaitToReadAsync().AsTask();
        Assert.False(waiting.IsCompleted);
        buffer.Post(Progress(1));
        Assert.True(await waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(buffer.TryRead(out GenerationEvent? e));
        Assert.Equal(Progress(1), e);

        Task<bool> end = buffer.WaitToReadAsync().AsTask();
        buffer.Complete();
        await end.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(await buffer.WaitToReadAsync());
        await buffer.Completion.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task AWriterThreadNeverWaitsForASlowReaderAndTheReaderEndsOnTheLatestState()
    {
        var buffer = new GenerationEventBuffer(budgetBytes: 16 * 1024);
        const int Total = 20_000;
        var writer = new Thread(() =>
        {
            for (int step = 1; step <= Total; step++)
            {
                buffer.Post(Progress(step));
                buffer.Post(Snapshot(step, 0));
            }

            buffer.Post(Image(0));
            buffer.Post(Completed());
            buffer.Complete();
        });

        var read = new List<GenerationEvent>();
        var reader = Task.Run(async () =>
        {
            await foreach (GenerationEvent e in buffer.ReadAllAsync())
            {
                read.Add(e);
                if (read.Count % 100 == 0)
                {
                    await Task.Delay(1); // a slow client
                }
            }
        });
        writer.Start();
        Assert.True(writer.Join(TimeSpan.FromMinutes(1)), "the writer blocked");
        await reader.WaitAsync(TimeSpan.FromMinutes(1));

        var progress = read.OfType<ProgressEvent>().Select(p => p.CompletedSteps).ToList();
        Assert.Equal(progress.Order(), progress);
        Assert.Equal(Total, progress[^1]);
        Assert.Equal(Total, read.OfType<SnapshotEvent>().Last().CompletedSteps);
        Assert.IsType<ImageEvent>(read[^2]);
        var completed = Assert.IsType<CompletedEvent>(read[^1]);
        Assert.Equal((2 * Total) - (read.Count - 2), completed.DroppedEvents);
    }
}
