using System.Collections.Concurrent;
using Grpc.Core;
using VqDiffusion.Client;
using VqDiffusion.Deploy.Tests.TestSupport;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Deploy.Tests;

/// <summary>A replica killed (SIGKILL) behind nginx while it streams.</summary>
[Collection(ReplicaProcessesCollection.Name)]
public sealed class KilledReplicaTests
{
    /// <summary>
    /// What a client of nginx sees when the replica of its started stream dies: nginx resets the stream (RST_STREAM
    /// INTERNAL_ERROR), which grpc-dotnet reports as INTERNAL "... reset the stream ..."; VqDiffusionClient counts such
    /// a reset as a lost connection (UNAVAILABLE) for its retries. Without a proxy the client gets UNAVAILABLE itself
    /// (ClientSideBalancingTests).
    /// </summary>
    public static readonly StatusCode LostStreamStatus = StatusCode.Internal;

    [Fact]
    public async Task ItsStreamsFailAndSucceedOnRetryWhileNewCallsGoToTheOtherReplicas()
    {
        await using Cluster c = await Cluster.StartAsync(3);

        // A VqDiffusionClient that retries a stream even after its events (opted in).
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var retrying = new VqDiffusionClient(c.Nginx.Address, new VqDiffusionClientOptions
        {
            Retry = { RetryGenerateAfterEvents = true, InitialBackoff = TimeSpan.FromMilliseconds(100), OnRetry = retries.Enqueue },
        });
        // Three plain streams, accepted (response headers) before the client's stream starts.
        var plain = Enumerable.Range(0, 3).Select(i => ObservedStream.Start(c.ThroughNginx, Requests.Long($"killed-{i}", (ulong)i))).ToArray();
        string?[] servedBy = await Task.WhenAll(plain.Select(s => s.Stream.Headers)).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.All(servedBy, Assert.NotNull);

        var clientEvents = new ConcurrentQueue<GenerationEvent>();
        var clientProgress = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        GenerateRequest clientRequest = Requests.Long("killed-client", 42);
        clientRequest.ClearSeed(); // the retry must reuse the seed the lost run reported
        Task clientRun = Task.Run(async () =>
        {
            await foreach (GenerationEvent e in retrying.GenerateAsync(clientRequest))
            {
                clientEvents.Enqueue(e);
                if (e is GenerationEvent.Progress)
                {
                    clientProgress.TrySetResult();
                }
            }
        });
        await clientProgress.Task.WaitAsync(TimeSpan.FromMinutes(2));

        // Kill the replica that runs the client's stream, right after its first step.
        ReplicaProcess victim = Assert.Single(c.Replicas, r => r.Logged("Request killed-client accepted"));
        bool[] doneBeforeKill = plain.Select(s => s.Done.IsCompleted).ToArray();
        victim.Kill();
        Assert.True(await victim.WaitForExitAsync(TimeSpan.FromSeconds(30)));

        await c.Within(Task.WhenAll(plain.Select(s => s.Done)), TimeSpan.FromMinutes(10), "the plain streams");
        await c.Within(clientRun, TimeSpan.FromMinutes(10), "the retrying client's stream");
        string diagnostics = c.Describe();

        // Plain streams: those in flight on the victim were reset by nginx, the others completed.
        for (int i = 0; i < plain.Length; i++)
        {
            ObservedStream s = plain[i].Stream;
            if (servedBy[i] == victim.InstanceId && !doneBeforeKill[i])
            {
                Assert.False(s.Completed, $"killed-{i} completed although its replica was killed\n{diagnostics}");
                Assert.Equal(LostStreamStatus, s.Error?.StatusCode);
                Assert.Contains("reset the stream", s.Error!.Status.Detail, StringComparison.Ordinal);
            }
            else
            {
                Assert.True(s.Completed, $"killed-{i} on {servedBy[i]}: {s.Error}\n{diagnostics}");
            }
        }

        // The retrying client lost its stream once (after events, reset by nginx), ran it again on another replica with the same seed.
        RetryAttempt retry = Assert.Single(retries);
        Assert.Equal((LostStreamStatus, true, "Generate"), (retry.StatusCode, retry.AfterEvents, retry.Method));
        GenerationEvent.Started[] starts = clientEvents.OfType<GenerationEvent.Started>().ToArray();
        Assert.Equal(2, starts.Length);
        Assert.Equal(starts[0].Seed, starts[1].Seed);
        Assert.IsType<GenerationEvent.Completed>(clientEvents.Last());
        string[] completedBy = await c.WaitCompletedByAsync("killed-client");
        Assert.NotEqual(victim.InstanceId, Assert.Single(completedBy));
        // Its images are those of the seed: the same as a replica makes for that seed directly.
        byte[][] retried = clientEvents.SkipWhile(e => !ReferenceEquals(e, starts[1])).OfType<GenerationEvent.ImageGenerated>().OrderBy(e => e.Index).Select(e => e.Data).ToArray();
        ReplicaProcess survivor = c.Replicas.First(r => !r.HasExited);
        using (var direct = new VqDiffusionClient(survivor.Address))
        {
            GenerateRequest seeded = clientRequest.Clone();
            seeded.Seed = starts[0].Seed;
            GenerationOutput reference = await direct.GenerateImagesAsync(seeded);
            Assert.Equal(reference.Images.Select(i => i.Data), retried);
        }

        // New calls through nginx all succeed: nginx skips the dead replica before anything reaches the client.
        ObservedStream[] after = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => ObservedStream.RunAsync(c.ThroughNginx, Requests.Short($"after-kill-{i}", (ulong)i))));
        Assert.All(after, s => Assert.True(s.Completed, $"{s.Error}\n{diagnostics}"));
        Assert.DoesNotContain(victim.InstanceId, after.Select(s => s.ServedBy));
        Assert.Equal(2, after.Select(s => s.ServedBy).Distinct().Count());

        // The plain streams that were lost succeed when sent again.
        using var plainClient = new VqDiffusionClient(c.Nginx.Address);
        for (int i = 0; i < plain.Length; i++)
        {
            if (plain[i].Stream.Error is not null)
            {
                GenerationOutput again = await plainClient.GenerateImagesAsync(Requests.Long($"killed-{i}-again", (ulong)i));
                Assert.Single(again.Images);
            }
        }
    }
}
