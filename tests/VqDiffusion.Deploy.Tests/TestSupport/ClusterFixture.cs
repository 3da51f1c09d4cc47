namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>Three replicas behind nginx, shared by a test class that leaves them running.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    private Cluster? _cluster;

    public Cluster Cluster => _cluster ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync() => _cluster = await Cluster.StartAsync(3);

    public async Task DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }
}
