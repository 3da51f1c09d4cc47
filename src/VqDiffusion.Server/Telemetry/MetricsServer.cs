using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// The Prometheus scrape endpoint (<c>Metrics:Port</c>): a small HTTP/1.1 Kestrel server of its own that serves
/// <c>GET /metrics</c> from the host's <see cref="MeterProvider"/> and 404 for anything else. Being a separate
/// listener, it leaves the gRPC endpoints (<c>--urls</c>, <c>Kestrel:Endpoints</c>, HTTP/2 only) untouched and
/// never serves gRPC, and the gRPC port never serves metrics.
/// </summary>
public sealed class MetricsServer : IHostedService, IAsyncDisposable
{
    public const string Path = "/metrics";

    private readonly MeterProvider _meterProvider;
    private readonly MetricsOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger<MetricsServer> _logger;
    private WebApplication? _app;

    public MetricsServer(MeterProvider meterProvider, IOptions<MetricsOptions> options, ILoggerFactory loggerFactory)
    {
        _meterProvider = meterProvider;
        _options = options.Value;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<MetricsServer>();
    }

    /// <summary>The scrape URL once started, e.g. <c>http://127.0.0.1:9464/metrics</c> (the bound port when <c>Metrics:Port</c> is 0).</summary>
    public Uri? Address { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        int port = _options.Port ?? throw new InvalidOperationException("Metrics:Port is not set.");
        WebApplicationBuilder builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = typeof(MetricsServer).Assembly.GetName().Name });
        builder.Services.AddSingleton(_loggerFactory);
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            string host = _options.Host?.Trim() ?? string.Empty;
            Action<ListenOptions> http1 = listen => listen.Protocols = HttpProtocols.Http1;
            if (host is "" or "*" or "+")
            {
                kestrel.ListenAnyIP(port, http1);
            }
            else if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
            {
                kestrel.ListenLocalhost(port, http1);
            }
            else if (IPAddress.TryParse(host, out IPAddress? address))
            {
                kestrel.Listen(address, port, http1);
            }
            else
            {
                throw new InvalidOperationException($"Metrics:Host must be empty, '*', 'localhost' or an IP address, not '{host}'.");
            }
        });

        WebApplication app = builder.Build();
        app.UseOpenTelemetryPrometheusScrapingEndpoint(_meterProvider, predicate: null, path: Path, configureBranchedPipeline: null, optionsName: null);
        app.Run(context =>
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return Task.CompletedTask;
        });
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        _app = app;

        string bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var uri = new UriBuilder(bound) { Path = Path };
        if (uri.Host is "[::]" or "0.0.0.0")
        {
            uri.Host = "127.0.0.1";
        }

        Address = uri.Uri;
        _logger.LogInformation("Prometheus metrics at {MetricsUrl} (listening on {MetricsBinding})", Address, bound);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is { } app)
        {
            await app.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is { } app)
        {
            _app = null;
            await app.DisposeAsync().ConfigureAwait(false);
        }
    }
}
