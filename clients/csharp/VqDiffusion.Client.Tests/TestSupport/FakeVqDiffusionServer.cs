using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Client.Tests.TestSupport;

/// <summary>
/// What the fake server answers to one call: these messages, then this status in the trailers, or, with
/// <paramref name="ResetWith"/>, an HTTP/2 RST_STREAM with that error code instead of trailers (what a proxy sends when
/// the replica behind it dies). <paramref name="BeforeEnd"/> is awaited after the messages, before the status or
/// reset (e.g. until the client has read them: a reset discards what the client has not read yet).
/// </summary>
public sealed record FakeReply(IReadOnlyList<IMessage> Messages, StatusCode Code, string Detail = "", int? ResetWith = null, Func<Task>? BeforeEnd = null);

/// <summary>
/// A scripted gRPC server (Kestrel, HTTP/2 cleartext, 127.0.0.1) that answers Generate and GetModelInfo with the
/// messages and status its script returns for each attempt, written as plain gRPC frames and trailers. It makes the
/// failures the retry logic must tell apart (before or after the first event) happen exactly, which a real server
/// only does by chance.
/// </summary>
public sealed class FakeVqDiffusionServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly List<GenerateRequest> _generateRequests = [];
    private int _modelInfoCalls;

    private FakeVqDiffusionServer(WebApplication app) => _app = app;

    public string Address { get; private set; } = "";

    /// <summary>The Generate requests received, in order.</summary>
    public IReadOnlyList<GenerateRequest> GenerateRequests
    {
        get
        {
            lock (_generateRequests)
            {
                return _generateRequests.ToArray();
            }
        }
    }

    public int ModelInfoCalls => Volatile.Read(ref _modelInfoCalls);

    /// <param name="generate">Attempt number (1-based) and request → the reply.</param>
    /// <param name="modelInfo">Attempt number (1-based) → the reply.</param>
    public static async Task<FakeVqDiffusionServer> StartAsync(Func<int, GenerateRequest, FakeReply>? generate = null, Func<int, FakeReply>? modelInfo = null)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
        WebApplication app = builder.Build();
        var server = new FakeVqDiffusionServer(app);
        app.MapPost("/vqdiffusion.v1.VqDiffusionService/Generate", async context =>
        {
            var request = GenerateRequest.Parser.ParseFrom(await ReadMessageAsync(context.Request).ConfigureAwait(false));
            int attempt;
            lock (server._generateRequests)
            {
                server._generateRequests.Add(request);
                attempt = server._generateRequests.Count;
            }

            FakeReply reply = generate?.Invoke(attempt, request) ?? new FakeReply([], StatusCode.Unimplemented);
            await WriteReplyAsync(context, reply).ConfigureAwait(false);
        });
        app.MapPost("/vqdiffusion.v1.VqDiffusionService/GetModelInfo", async context =>
        {
            await ReadMessageAsync(context.Request).ConfigureAwait(false);
            int attempt = Interlocked.Increment(ref server._modelInfoCalls);
            FakeReply reply = modelInfo?.Invoke(attempt) ?? new FakeReply([], StatusCode.Unimplemented);
            await WriteReplyAsync(context, reply).ConfigureAwait(false);
        });
        await app.StartAsync().ConfigureAwait(false);
        server.Address = app.Urls.Single();
        return server;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    private static async Task<byte[]> ReadMessageAsync(HttpRequest request)
    {
        using var body = new MemoryStream();
        await request.Body.CopyToAsync(body).ConfigureAwait(false);
        byte[] frame = body.ToArray();
        int length = BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(1, 4));
        return frame.AsSpan(5, length).ToArray();
    }

    private static async Task WriteReplyAsync(HttpContext context, FakeReply reply)
    {
        context.Response.ContentType = "application/grpc";
        await context.Response.StartAsync().ConfigureAwait(false);
        foreach (IMessage message in reply.Messages)
        {
            byte[] payload = message.ToByteArray();
            var frame = new byte[5 + payload.Length];
            BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(1, 4), payload.Length);
            payload.CopyTo(frame, 5);
            await context.Response.Body.WriteAsync(frame).ConfigureAwait(false);
            await context.Response.Body.FlushAsync().ConfigureAwait(false);
        }

        if (reply.BeforeEnd is not null)
        {
            await reply.BeforeEnd().WaitAsync(TimeSpan.FromMinutes(1)).ConfigureAwait(false);
        }

        if (reply.ResetWith is int errorCode)
        {
            context.Features.Get<IHttpResetFeature>()!.Reset(errorCode);
            return;
        }

        context.Response.AppendTrailer("grpc-status", ((int)reply.Code).ToString(CultureInfo.InvariantCulture));
        if (reply.Detail.Length > 0)
        {
            context.Response.AppendTrailer("grpc-message", Uri.EscapeDataString(reply.Detail));
        }
    }
}
