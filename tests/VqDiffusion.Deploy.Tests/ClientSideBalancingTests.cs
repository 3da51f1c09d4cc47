using System.Collections.Concurrent;
using Grpc.Core;
using VqDiffusion.Client;
using VqDiffusion.Deploy.Tests.TestSupport;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Deploy.Tests;

/// <summary>VqDiffusionClient.ForAddresses over two server processes, no proxy: round-robin, and a replica killed mid-stream.</summary>
[Collection(ReplicaProcessesCollection.Name)]
public sealed class ClientSideBalancingTests
{
    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    [Fact]
    public async Task CallsAreSpreadAndAKilledReplicasStreamFailsWithUnavailableThenSucceedsOnTheOther()
    {
        await using ReplicaProcess a = ReplicaProcess.Start("replica-a");
        await using ReplicaProcess b = ReplicaProcess.Start("replica-b");
        await Task.WhenAll(a.WaitServingAsync(TimeSpan.FromMinutes(3)), b.WaitServingAsync(TimeSpan.FromMinutes(3)));
        ReplicaProcess[] replicas = [a, b];
        var retries = new ConcurrentQueue<RetryAttempt>();
        using var balanced = VqDiffusionClient.ForAddresses([a.Address, b.Address], new VqDiffusionClientOptions
        {
            Retry = { RetryGenerateAfterEvents = true, InitialBackoff = TimeSpan.FromMilliseconds(100), OnRetry = retries.Enqueue },
        });
        using var noRetry = VqDiffusionClient.ForAddresses([a.Address, b.Address], new VqDiffusionClientOptions { Retry = VqDiffusionRetryOptions.None });

        // Round-robin: short requests land on both replicas (each replica's log names the requests it completed).
        for (int i = 0; i < 8; i++)
        {
            await balanced.GenerateImagesAsync(Requests.Short($"rr-{i}", (ulong)i));
        }

        int[] perReplica = replicas.Select(r => Enumerable.Range(0, 8).Count(i => r.Logged($"Request rr-{i} completed"))).ToArray();
        Assert.True(perReplica.All(n => n >= 2), $"rr requests per replica: {string.Join(", ", perReplica)}");

        // Both replicas connected on the channel without retries: its next two calls go one to each replica.
        var seen = new HashSet<string>();
        for (int i = 0; i < 200 && seen.Count < 2; i++)
        {
            using var call = new VqDiffusionService.VqDiffusionServiceClient(noRetry.Channel).GetModelInfoAsync(new GetModelInfoRequest());
            await call.ResponseAsync;
            seen.Add((await call.ResponseHeadersAsync).GetValue(ObservedStream.InstanceHeader) ?? "");
        }

        Assert.Equal(2, seen.Count);

        // Three long streams: one through the retrying client, two through the other (one per replica).
        var events = new ConcurrentQueue<GenerationEvent>();
        var progressed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task retried = Task.Run(async () =>
        {
            await foreach (GenerationEvent e in balanced.GenerateAsync(Requests.Long("lb-retried", 7)))
            {
                events.Enqueue(e);
                if (e is GenerationEvent.Progress)
                {
                    progressed.TrySetResult();
                }
            }
        });
        var plainProgress = new[] { NewSignal(), NewSignal() };
        Task<VqDiffusionException?>[] plain = Enumerable.Range(0, 2).Select(i => Task.Run(async () =>
        {
            try
            {
                await foreach (GenerationEvent e in noRetry.GenerateAsync(Requests.Long($"lb-plain-{i}", (ulong)(8 + i))))
                {
                    if (e is GenerationEvent.Progress)
                    {
                        plainProgress[i].TrySetResult();
                    }
                }

                return null;
            }
            catch (VqDiffusionException ex)
            {
                plainProgress[i].TrySetResult();
                return ex;
            }
        })).ToArray();
        await Task.WhenAll(progressed.Task, plainProgress[0].Task, plainProgress[1].Task).WaitAsync(TimeSpan.FromMinutes(10));

        // Kill the replica of the retrying client's stream.
        ReplicaProcess victim = Assert.Single(replicas, r => r.Logged("Request lb-retried accepted"));
        ReplicaProcess survivor = replicas.Single(r => r != victim);
        int lostIndex = Assert.Single(Enumerable.Range(0, 2), i => victim.Logged($"Request lb-plain-{i} accepted"));
        bool lostDoneBeforeKill = plain[lostIndex].IsCompleted;
        victim.Kill();

        VqDiffusionException?[] outcomes = await Task.WhenAll(plain).WaitAsync(TimeSpan.FromMinutes(10));
        if (!lostDoneBeforeKill)
        {
            // In flight on the killed replica, without retries: UNAVAILABLE.
            Assert.Equal(StatusCode.Unavailable, outcomes[lostIndex]?.StatusCode);
        }

        Assert.Null(outcomes[1 - lostIndex]);
        await retried.WaitAsync(TimeSpan.FromMinutes(10));

        RetryAttempt retry = Assert.Single(retries);
        Assert.Equal((StatusCode.Unavailable, true), (retry.StatusCode, retry.AfterEvents));
        Assert.Equal(2, events.OfType<GenerationEvent.Started>().Count());
        Assert.IsType<GenerationEvent.Completed>(events.Last());
        Assert.True(await survivor.WaitForLogAsync("Request lb-retried completed", TimeSpan.FromSeconds(10)), survivor.Tail());

        // After the kill every call goes to the survivor and succeeds, with no retry needed beyond the balancer's own.
        for (int i = 0; i < 4; i++)
        {
            await balanced.GenerateImagesAsync(Requests.Short($"after-{i}", (ulong)i));
            Assert.True(await survivor.WaitForLogAsync($"Request after-{i} completed", TimeSpan.FromSeconds(10)));
        }
    }
}
