using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using VqDiffusion.Client;
using VqDiffusion.Deploy.Tests.TestSupport;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Deploy.Tests;

/// <summary>deploy/nginx/nginx.conf in front of three server processes: calls are spread and pass through unchanged.</summary>
[Collection(ReplicaProcessesCollection.Name)]
public sealed class NginxScaleOutTests : IClassFixture<ClusterFixture>
{
    private readonly Cluster _cluster;

    public NginxScaleOutTests(ClusterFixture fixture) => _cluster = fixture.Cluster;

    [Fact]
    public async Task ConcurrentStreamsAreSpreadOverTheReplicasAndArriveUnchanged()
    {
        Cluster c = _cluster;
        ObservedStream[] streams = await Task.WhenAll(Enumerable.Range(0, 6)
            .Select(i => ObservedStream.RunAsync(c.ThroughNginx, Requests.Short($"spread-{i}", (ulong)(100 + i)))))
            .WaitAsync(TimeSpan.FromMinutes(3));

        Assert.All(streams, s => Assert.True(s.Completed, $"{s.Error}\n{c.Describe()}"));
        string[] servedBy = streams.Select(s => s.ServedBy ?? "(no header)").ToArray();
        // Every replica served some of the six concurrent streams.
        Assert.Equal(c.Replicas.Select(r => r.InstanceId).Order(), servedBy.Distinct().Order());
        for (int i = 0; i < streams.Length; i++)
        {
            // The replica named by the header is the one that ran the request (its own log), and the only one.
            Assert.Equal([servedBy[i]], await c.WaitCompletedByAsync($"spread-{i}"));
        }

        // nginx logged each call with the replica that answered it.
        string[] accessLines = c.Nginx.AccessLog.Split('\n').Where(l => l.Contains("/vqdiffusion.v1.VqDiffusionService/Generate", StringComparison.Ordinal)).ToArray();
        foreach (ReplicaProcess replica in c.Replicas)
        {
            int expected = servedBy.Count(s => s == replica.InstanceId);
            Assert.True(expected <= accessLines.Count(l => l.Contains($"instance={replica.InstanceId} ", StringComparison.Ordinal)), c.Nginx.AccessLog);
        }

        // Through nginx, a stream is what another replica sends directly for the same request (up to timings).
        foreach (IGrouping<string, int> group in Enumerable.Range(0, streams.Length).GroupBy(i => servedBy[i]))
        {
            int i = group.First();
            ReplicaProcess other = c.Replicas.First(r => r.InstanceId != group.Key);
            using var channel = GrpcChannel.ForAddress(other.Address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 * 1024 * 1024 });
            ObservedStream direct = await ObservedStream.RunAsync(new VqDiffusionService.VqDiffusionServiceClient(channel), Requests.Short($"spread-{i}", (ulong)(100 + i)));
            Assert.Equal(other.InstanceId, direct.ServedBy);
            Assert.True(direct.Completed, direct.Error?.ToString());
            Assert.Equal(ObservedStream.Comparable(direct.Events), ObservedStream.Comparable(streams[i].Events));
            Assert.Contains(streams[i].Events, e => e.EventCase == GenerateResponse.EventOneofCase.Snapshot);
            Assert.Equal(2, streams[i].Events.Count(e => e.EventCase == GenerateResponse.EventOneofCase.Image));
        }
    }

    [Fact]
    public async Task ErrorsModelInfoAndHealthPassThroughUnchanged()
    {
        Cluster c = _cluster;
        var noRetry = new VqDiffusionClientOptions { Retry = VqDiffusionRetryOptions.None };
        using var viaNginx = new VqDiffusionClient(c.Nginx.Address, noRetry);
        using var direct = new VqDiffusionClient(c.Replicas[0].Address, noRetry);
        var bad = new GenerateRequest { Prompts = { "a photo of a cat" }, TruncationRate = 2, NumInferenceSteps = 10 };

        var proxied = await Assert.ThrowsAsync<VqDiffusionException>(() => viaNginx.GenerateImagesAsync(bad));
        var expected = await Assert.ThrowsAsync<VqDiffusionException>(() => direct.GenerateImagesAsync(bad));

        Assert.Equal(StatusCode.InvalidArgument, proxied.StatusCode);
        Assert.Equal(expected.Detail, proxied.Detail);
        // The google.rpc.BadRequest details (grpc-status-details-bin) come through too.
        Assert.Equal("truncation_rate", Assert.Single(proxied.FieldViolations).Field);
        Assert.Equal(expected.FieldViolations, proxied.FieldViolations);

        Assert.Equal(await direct.GetModelInfoAsync(), await viaNginx.GetModelInfoAsync());
        var health = new Health.HealthClient(c.NginxChannel);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = ReplicaProcess.ServiceName })).Status);
        var unknown = await Assert.ThrowsAsync<RpcException>(() => health.CheckAsync(new HealthCheckRequest { Service = "no.such.Service" }).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
    }
}
