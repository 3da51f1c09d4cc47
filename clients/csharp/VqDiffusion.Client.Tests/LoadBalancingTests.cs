using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Client.Tests;

public sealed class LoadBalancingTests
{
    private static Task<RunningServer> StartReplicaAsync(string instanceId) =>
        RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}", $"--Server:InstanceId={instanceId}"]);

    /// <summary>GetModelInfo over the client's channel; the replica that answered, from its vqd-instance-id header.</summary>
    private static async Task<string> ServedByAsync(GrpcChannel channel)
    {
        using var call = new VqDiffusionService.VqDiffusionServiceClient(channel).GetModelInfoAsync(new GetModelInfoRequest());
        await call.ResponseAsync;
        Metadata headers = await call.ResponseHeadersAsync;
        return headers.GetValue("vqd-instance-id") ?? "(no header)";
    }

    [Fact]
    public async Task ForAddressesSpreadsCallsRoundRobinOverTheReplicas()
    {
        await using RunningServer a = await StartReplicaAsync("replica-a");
        await using RunningServer b = await StartReplicaAsync("replica-b");
        using var client = VqDiffusionClient.ForAddresses([a.Address, b.Address]);

        // The channel connects to both replicas in the background; round-robin picks among the connected ones.
        var seen = new HashSet<string>();
        for (int i = 0; i < 200 && seen.Count < 2; i++)
        {
            seen.Add(await ServedByAsync(client.Channel));
            if (seen.Count < 2)
            {
                await Task.Delay(25);
            }
        }

        Assert.Equal(["replica-a", "replica-b"], seen.Order().ToArray());
        var next = new List<string>();
        for (int i = 0; i < 6; i++)
        {
            next.Add(await ServedByAsync(client.Channel));
        }

        // Both connected: the calls alternate.
        for (int i = 1; i < next.Count; i++)
        {
            Assert.NotEqual(next[i - 1], next[i]);
        }

        // The client's own calls go through the same balanced channel, and either replica makes the same image.
        var request = new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = 3, Seed = 11 };
        GenerationOutput first = await client.GenerateImagesAsync(request);
        GenerationOutput second = await client.GenerateImagesAsync(request);
        Assert.Equal(first.Images.Single().Data, second.Images.Single().Data);
    }

    [Fact]
    public async Task AReplicaThatStopsIsSkippedAndCallsBeforeAnyEventAreRetriedOnTheOther()
    {
        RunningServer? a = await StartReplicaAsync("replica-a");
        try
        {
            await using RunningServer b = await StartReplicaAsync("replica-b");
            using var client = VqDiffusionClient.ForAddresses([a.Address, b.Address], new VqDiffusionClientOptions
            {
                Retry = new VqDiffusionRetryOptions { MaxAttempts = 10, InitialBackoff = TimeSpan.FromMilliseconds(20), MaxBackoff = TimeSpan.FromMilliseconds(200) },
            });
            var seen = new HashSet<string>();
            for (int i = 0; i < 200 && seen.Count < 2; i++)
            {
                seen.Add(await ServedByAsync(client.Channel));
            }

            Assert.Equal(2, seen.Count);
            await a.DisposeAsync();
            a = null;

            // Every call succeeds: on the remaining replica, after a retry if it was sent to the stopped one.
            for (int i = 0; i < 6; i++)
            {
                GetModelInfoResponse info = await client.GetModelInfoAsync();
                Assert.Equal("tiny-ithq", info.ModelId);
                Assert.Single((await client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a red car" }, NumInferenceSteps = 2, Seed = (ulong)i })).Images);
            }

            Assert.Equal("replica-b", await ServedByAsync(client.Channel));
        }
        finally
        {
            if (a is not null)
            {
                await a.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task ADnsTargetIsBalancedOverItsAddresses()
    {
        await using RunningServer a = await StartReplicaAsync("replica-a");
        int port = new Uri(a.Address).Port;
        using var client = new VqDiffusionClient($"dns:///127.0.0.1:{port}", new VqDiffusionClientOptions());

        Assert.Equal("tiny-ithq", (await client.GetModelInfoAsync()).ModelId);
        Assert.Equal("replica-a", await ServedByAsync(client.Channel));
    }

    [Fact]
    public void AddressesMustShareOneScheme()
    {
        Assert.Throws<ArgumentException>(() => VqDiffusionClient.ForAddresses(["http://127.0.0.1:1", "https://127.0.0.1:2"]));
        Assert.Throws<ArgumentException>(() => VqDiffusionClient.ForAddresses([]));
    }
}
