using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// A stand-in OTLP/HTTP collector on a loopback port: keeps the body of every <c>POST /v1/traces</c>
/// (an ExportTraceServiceRequest in protobuf) and answers 200 with an empty ExportTraceServiceResponse.
/// </summary>
public sealed class FakeOtlpReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;

    private FakeOtlpReceiver(WebApplication app, Uri address, ConcurrentQueue<byte[]> bodies)
    {
        _app = app;
        Address = address;
        Bodies = bodies;
    }

    public Uri Address { get; }

    public ConcurrentQueue<byte[]> Bodies { get; }

    public static async Task<FakeOtlpReceiver> StartAsync()
    {
        var bodies = new ConcurrentQueue<byte[]>();
        WebApplicationBuilder builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http1));
        WebApplication app = builder.Build();
        app.Run(async context =>
        {
            if (context.Request.Method != HttpMethods.Post || context.Request.Path != "/v1/traces")
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
            }

            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body);
            bodies.Enqueue(body.ToArray());
            context.Response.StatusCode = StatusCodes.Status200OK;
            context.Response.ContentType = "application/x-protobuf";
        });
        await app.StartAsync();
        string bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new FakeOtlpReceiver(app, new Uri(bound), bodies);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
