using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// A server with the tiny model, a <see cref="FaultHook"/> to inject failures inside the model and
/// <see cref="CapturedLogs"/>, with grpc-dotnet's own logs at Information (where it would log a stack trace per
/// undecodable request).
/// </summary>
public sealed class FaultServerFixture : IAsyncLifetime
{
    private RunningServer? _server;

    public FaultHook Faults { get; } = new();

    public CapturedLogs Logs { get; } = new();

    public RunningServer Server => _server ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync() => _server = await RunningServer.StartAsync(
        [$"--Model:Path={Fixtures.TinyModel}", "--Logging:LogLevel:Grpc.AspNetCore.Server=Information", "--Logging:LogLevel:Grpc=Information"],
        configure: s =>
        {
            s.AddSingleton<IGenerationStepHook>(Faults);
            s.AddSingleton<ILoggerProvider>(Logs);
        });

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}
