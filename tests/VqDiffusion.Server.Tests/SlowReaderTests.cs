using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// Bounded memory per request: a client that stops reading gets the latest progress and snapshots (the older unsent
/// ones coalesced and counted in <c>completed.dropped_events</c>), all its images and the completed event, and the
/// runs interleaved with it are not slowed by it.
/// </summary>
public sealed class SlowReaderTests
{
    private const int Steps = 25;
    private const int Images = 8;

    private readonly ITestOutputHelper _output;

    public SlowReaderTests(ITestOutputHelper output) => _output = output;

    /// <summary>
    /// 8 images x 25 steps with a preview and the tokens of every image after every step: about 0.7 MB of events,
    /// against a 64 KiB event buffer (<c>Generation:EventBufferBytes</c>) and the HTTP/2 window of a client that
    /// does not read.
    /// </summary>
    private static GenerateRequest WithPreviews(string id) => new()
    {
        Prompts = { "a landscape with a lake", "a red car" },
        NumImagesPerPrompt = Images / 2,
        NumInferenceSteps = Steps,
        Seed = 21,
        RequestId = id,
        Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true, IncludePreview = true },
    };

    [Fact]
    public async Task AStalledReaderGetsTheLatestStateAllImagesAndCompletedWhileAnotherStreamRunsOn()
    {
        var steps = new ConcurrentDictionary<string, int>();
        var stalledAtLastStep = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var hook = new ObservingHook((id, completed) =>
        {
            steps[id] = completed;
            if (id == "stalled" && completed == Steps - 1)
            {
                stalledAtLastStep.TrySetResult();
            }
        });
        await using var server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", "--Generation:MaxActiveRuns=2", "--Generation:EventBufferBytes=65536"],
            configure: s => s.AddSingleton<IGenerationStepHook>(hook));

        // The stalled client opens its stream and reads nothing (its own connection, as another client would).
        using var stalledChannel = GrpcChannel.ForAddress(server.Address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 << 20 });
        using var stalled = new VqDiffusionService.VqDiffusionServiceClient(stalledChannel).Generate(WithPreviews("stalled"));
        while (!steps.ContainsKey("stalled"))
        {
            await Task.Delay(10);
        }

        // Another stream, interleaved with it a step at a time, runs to its end while the stalled one is unread.
        var reader = new GenerateRequest
        {
            Prompts = { "a photo of a cat" },
            NumInferenceSteps = 10,
            Seed = 5,
            RequestId = "reader",
            Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true },
        };
        List<GenerateResponse> read = await StreamCollector.ReadAllAsync(server.Client.Generate(reader));
        int stalledStepWhenReaderDone = steps["stalled"];
        Assert.True(stalledStepWhenReaderDone < Steps - 1, $"the stalled run was already at step {stalledStepWhenReaderDone} when the other one finished");
        Assert.Equal(10, read.Count(e => e.Progress is not null));
        Assert.Equal(10, read.Count(e => e.Snapshot is not null));
        Assert.Equal(0, read[^1].Completed.DroppedEvents);

        // The model went on past the unread stream: it reaches its last step without anyone reading.
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!stalledAtLastStep.Task.IsCompleted)
        {
            Assert.True(waited.Elapsed < TimeSpan.FromMinutes(5), $"the unread run stopped at step {steps["stalled"]}");
            await Task.WhenAny(stalledAtLastStep.Task, Task.Delay(1000));
        }

        _output.WriteLine($"the unread run reached its last step {waited.Elapsed.TotalSeconds:F1} s after the other one completed");

        // Now read: latest states, every image, and the count of what was coalesced.
        var events = await StreamCollector.ReadAllAsync(stalled);
        Grpc.V1.CompletedEvent completed = events[^1].Completed;
        Assert.NotNull(completed);
        var progress = events.Where(e => e.Progress is not null).Select(e => e.Progress.CompletedSteps).ToList();
        var snapshots = events.Where(e => e.Snapshot is not null).Select(e => e.Snapshot).ToList();
        int images = events.Count(e => e.Image is not null);
        _output.WriteLine($"stalled stream: {progress.Count} of {Steps} progress events, {snapshots.Count} of {Steps * Images} snapshots, {images} images, dropped_events = {completed.DroppedEvents}");

        Assert.Equal(Images, images);
        Assert.Equal(Images, completed.NumImages);
        Assert.True(completed.DroppedEvents > 0, "nothing was coalesced");
        Assert.Equal((Steps * (1 + Images)) - completed.DroppedEvents, progress.Count + snapshots.Count);
        Assert.True(progress.Count < Steps);

        // In order, and the latest state arrives: the last step's progress and every image's last snapshot.
        Assert.Equal(progress.Order(), progress);
        Assert.Equal(Steps, progress[^1]);
        for (int i = 0; i < Images; i++)
        {
            var mine = snapshots.Where(s => s.ImageIndex == i).Select(s => s.CompletedSteps).ToList();
            Assert.Equal(mine.Order(), mine);
            Assert.Equal(Steps, mine[^1]);
        }

        // Images come after every progress and snapshot, completed last.
        int firstImage = events.FindIndex(e => e.Image is not null);
        Assert.True(events.Take(firstImage).All(e => e.Image is null));
        Assert.True(events.Skip(firstImage).Take(Images).All(e => e.Image is not null));
    }

    private sealed class ObservingHook(Action<string, int> onStep) : IGenerationStepHook
    {
        public void BeforeStep(string requestId, int completedSteps, int totalSteps) => onStep(requestId, completedSteps);
    }
}
