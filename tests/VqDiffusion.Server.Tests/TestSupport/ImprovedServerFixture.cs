using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>One server with the model of the improved golden set (the tiny model) shared by a test class.</summary>
public sealed class ImprovedServerFixture : IAsyncLifetime
{
    private RunningServer? _server;

    public RunningServer Server => _server ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync() =>
        _server = await RunningServer.StartAsync([$"--Model:Path={ImprovedGoldenCases.ModelPath(ImprovedGoldenCases.GoldenDir)}"]);

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}
