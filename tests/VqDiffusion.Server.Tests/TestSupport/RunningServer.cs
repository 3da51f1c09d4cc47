using Grpc.Net.Client;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Server;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Web;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// The real server (Kestrel, HTTP/2 cleartext) on a free loopback port, and a Grpc.Net.Client
/// channel to it.
/// </summary>
public sealed class RunningServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    static RunningServer()
    {
        // Several servers, their model threads and synchronous test code share this process:
        // enough pool threads up front keeps gRPC I/O from waiting on thread injection.
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, 32), Math.Max(io, 32));
    }

    private RunningServer(WebApplication app, string address)
    {
        _app = app;
        Address = address;
        Channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 * 1024 * 1024 });
        Client = new VqDiffusionService.VqDiffusionServiceClient(Channel);
    }

    public string Address { get; }

    public GrpcChannel Channel { get; }

    public VqDiffusionService.VqDiffusionServiceClient Client { get; }

    public IServiceProvider Services => _app.Services;

    /// <summary>Starts a server; <paramref name="settings"/> are <c>--Key=Value</c> command-line settings.</summary>
    public static async Task<RunningServer> StartAsync(IEnumerable<string>? settings = null, IModelLoadGate? gate = null, bool waitForModel = true, Action<IServiceCollection>? configure = null)
    {
        var args = new List<string>
        {
            "--urls", "http://127.0.0.1:0",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:VqDiffusion=Information",
        };
        if (settings is not null)
        {
            args.AddRange(settings);
        }

        WebApplicationBuilder builder = ServerApp.CreateBuilder(args.ToArray());
        if (gate is not null)
        {
            builder.Services.AddSingleton(gate);
        }

        configure?.Invoke(builder.Services);
        WebApplication app = ServerApp.Build(builder);
        await app.StartAsync().ConfigureAwait(false);
        // With Web:Url the browser endpoint listens too; Address stays the gRPC (h2c) one.
        string address = app.Services.GetService<WebEndpoint>() is { } web
            ? web.GrpcAddresses(app.Services.GetRequiredService<IServer>()).Single()
            : app.Urls.Single();
        var server = new RunningServer(app, address);
        if (waitForModel)
        {
            await app.Services.GetRequiredService<ModelHost>().Loaded.WaitAsync(TimeSpan.FromMinutes(2)).ConfigureAwait(false);
        }

        return server;
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
