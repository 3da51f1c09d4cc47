using System.Net;
using System.Text;
using Google.Protobuf;
using Google.Rpc;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Grpc.Net.Client.Web;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Tests.TestSupport;
using VqDiffusion.Server.Web;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// The browser endpoint (<c>Web:Url</c>) of a real server on loopback ports: gRPC-Web over HTTP/1.1 with
/// Grpc.Net.Client.Web, the playground's files there only, CORS for the configured origins, and the gRPC endpoint of
/// <c>--urls</c> unchanged alongside it.
/// </summary>
public sealed class WebEndpointTests
{
    private const string AllowedOrigin = "http://playground.example:3000";

    private readonly ITestOutputHelper _output;

    public WebEndpointTests(ITestOutputHelper output) => _output = output;

    private static Task<RunningServer> StartWithWebAsync(params string[] more) =>
        RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}", "--Web:Url=http://127.0.0.1:0", .. more]);

    private static GrpcChannel GrpcWebChannel(Uri address, Version version) =>
        GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = new GrpcWebHandler(GrpcWebMode.GrpcWeb, new HttpClientHandler()),
            HttpVersion = version,
            HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            MaxReceiveMessageSize = 64 * 1024 * 1024,
        });

    private static Uri WebAddress(RunningServer server) => server.Services.GetRequiredService<WebEndpoint>().Address!;

    private static GenerateRequest SmallRequest() => new()
    {
        Prompts = { "a red car" },
        NumInferenceSteps = 4,
        Seed = 7,
        TruncationRate = 0.86f,
        Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludePreview = true, IncludeTokens = true },
    };

    [Fact]
    public async Task GrpcWebOverHttp11AnswersLikeTheGrpcEndpointWhichKeepsListening()
    {
        await using RunningServer server = await StartWithWebAsync();
        Uri web = WebAddress(server);
        Assert.Equal("127.0.0.1", web.Host);
        Assert.NotEqual(new Uri(server.Address).Port, web.Port);
        Assert.Equal(2, server.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.Count);

        using GrpcChannel channel = GrpcWebChannel(web, HttpVersion.Version11);
        var client = new VqDiffusionService.VqDiffusionServiceClient(channel);
        GetModelInfoResponse viaWeb = await client.GetModelInfoAsync(new GetModelInfoRequest());
        GetModelInfoResponse viaGrpc = await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.Equal(viaGrpc, viaWeb);

        HealthCheckResponse health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);

        // Server streaming over HTTP/1.1: the same events and the same image bytes as over HTTP/2.
        List<GenerateResponse> webEvents = await StreamCollector.ReadAllAsync(client.Generate(SmallRequest()));
        List<GenerateResponse> grpcEvents = await StreamCollector.ReadAllAsync(server.Client.Generate(SmallRequest()));
        Assert.Equal(4, webEvents.Count(e => e.EventCase == GenerateResponse.EventOneofCase.Progress));
        Assert.Equal(4, webEvents.Count(e => e.EventCase == GenerateResponse.EventOneofCase.Snapshot));
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, webEvents[^1].EventCase);
        ByteString webImage = Assert.Single(webEvents, e => e.EventCase == GenerateResponse.EventOneofCase.Image).Image.Data;
        ByteString grpcImage = Assert.Single(grpcEvents, e => e.EventCase == GenerateResponse.EventOneofCase.Image).Image.Data;
        Assert.Equal(grpcImage, webImage);
        Assert.Equal(
            grpcEvents.Where(e => e.EventCase == GenerateResponse.EventOneofCase.Snapshot).Select(e => e.Snapshot.Preview),
            webEvents.Where(e => e.EventCase == GenerateResponse.EventOneofCase.Snapshot).Select(e => e.Snapshot.Preview));

        // The browser endpoint speaks HTTP/1.1 only, and the gRPC one HTTP/2 only (as before).
        using var http11 = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var h2c = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(30) };
        using (HttpResponseMessage onGrpcPort = await http11.GetAsync(server.Address))
        {
            Assert.Equal(HttpStatusCode.BadRequest, onGrpcPort.StatusCode);
        }

        await Assert.ThrowsAsync<HttpRequestException>(() => h2c.GetAsync(web));
    }

    [Fact]
    public async Task ThePlaygroundIsServedOnTheBrowserEndpointOnly()
    {
        await using RunningServer server = await StartWithWebAsync();
        Uri web = WebAddress(server);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using (HttpResponseMessage page = await http.GetAsync(web))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal(HttpVersion.Version11, page.Version);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
            Assert.Equal("no-cache", page.Headers.CacheControl?.ToString());
            string html = await page.Content.ReadAsStringAsync();
            Assert.Contains("<title>VqDiffusion playground</title>", html);
            Assert.Contains("playground.js", html);
        }

        using (HttpResponseMessage script = await http.GetAsync(new Uri(web, "/playground.js")))
        {
            Assert.Equal(HttpStatusCode.OK, script.StatusCode);
            Assert.Equal("text/javascript", script.Content.Headers.ContentType?.MediaType);
            Assert.True((await script.Content.ReadAsByteArrayAsync()).Length > 1000);
        }

        using (HttpResponseMessage missing = await http.GetAsync(new Uri(web, "/nothing-here.js")))
        {
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        }

        // The gRPC endpoint keeps its text answer at / and serves none of the files.
        using var h2c = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(30) };
        Assert.StartsWith("VqDiffusion.Grpc: a gRPC service (HTTP/2).", await h2c.GetStringAsync(server.Address));
        using (HttpResponseMessage file = await h2c.GetAsync(new Uri(new Uri(server.Address), "/playground.js")))
        {
            Assert.Equal(HttpStatusCode.NotFound, file.StatusCode);
        }
    }

    [Fact]
    public async Task ErrorsOverGrpcWebCarryTheStatusAndTheBadRequestDetails()
    {
        await using RunningServer server = await StartWithWebAsync();
        using GrpcChannel channel = GrpcWebChannel(WebAddress(server), HttpVersion.Version11);
        var client = new VqDiffusionService.VqDiffusionServiceClient(channel);
        GenerateRequest request = SmallRequest();
        request.TruncationRate = 2;
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(client.Generate(request)));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Google.Rpc.Status? status = ex.GetRpcStatus();
        Assert.NotNull(status);
        BadRequest? bad = status.GetDetail<BadRequest>();
        Assert.NotNull(bad);
        Assert.Equal("truncation_rate", Assert.Single(bad.FieldViolations).Field);
        _output.WriteLine($"over gRPC-Web: {ex.StatusCode} {ex.Status.Detail}");
    }

    [Fact]
    public async Task CorsAllowsTheConfiguredOriginsWithTheAuthorizationHeaderAndExposesTheStatus()
    {
        await using RunningServer server = await StartWithWebAsync($"--Web:AllowedOrigins={AllowedOrigin}", "--Server:InstanceId=replica-7");
        Uri method = new(WebAddress(server), "/vqdiffusion.v1.VqDiffusionService/GetModelInfo");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };

        using (HttpResponseMessage allowed = await http.SendAsync(Preflight(method, AllowedOrigin)))
        {
            Assert.Equal(HttpStatusCode.NoContent, allowed.StatusCode);
            Assert.Equal(AllowedOrigin, Header(allowed, "Access-Control-Allow-Origin"));
            string headers = Header(allowed, "Access-Control-Allow-Headers")!.ToLowerInvariant();
            foreach (string h in new[] { "authorization", "content-type", "x-grpc-web", "x-user-agent" })
            {
                Assert.Contains(h, headers);
            }

            Assert.Contains("POST", Header(allowed, "Access-Control-Allow-Methods"));
        }

        using (HttpResponseMessage denied = await http.SendAsync(Preflight(method, "http://elsewhere.example")))
        {
            Assert.Null(Header(denied, "Access-Control-Allow-Origin"));
        }

        // The call itself: a gRPC-Web POST from that origin may read grpc-status and the replica's name.
        using var post = new HttpRequestMessage(HttpMethod.Post, method) { Content = new ByteArrayContent([0, 0, 0, 0, 0]) };
        post.Content.Headers.ContentType = new("application/grpc-web+proto");
        post.Headers.TryAddWithoutValidation("Origin", AllowedOrigin);
        post.Headers.TryAddWithoutValidation("X-Grpc-Web", "1");
        using HttpResponseMessage response = await http.SendAsync(post);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(AllowedOrigin, Header(response, "Access-Control-Allow-Origin"));
        string exposed = Header(response, "Access-Control-Expose-Headers")!;
        foreach (string h in new[] { "grpc-status", "grpc-message", "grpc-status-details-bin", "vqd-instance-id" })
        {
            Assert.Contains(h, exposed);
        }

        Assert.Equal("replica-7", Header(response, "vqd-instance-id"));
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        int length = (body[1] << 24) | (body[2] << 16) | (body[3] << 8) | body[4];
        Assert.Equal(0, body[0]);
        Assert.True(GetModelInfoResponse.Parser.ParseFrom(body, 5, length).LatentHeight > 0);
        string trailer = Encoding.ASCII.GetString(body, 5 + length + 5, body.Length - (5 + length + 5));
        Assert.Equal(0x80, body[5 + length]);
        Assert.Equal("grpc-status: 0\r\n", trailer);
    }

    [Fact]
    public async Task WithoutAllowedOriginsThereAreNoCorsHeaders()
    {
        await using RunningServer server = await StartWithWebAsync();
        Uri method = new(WebAddress(server), "/vqdiffusion.v1.VqDiffusionService/GetModelInfo");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using HttpResponseMessage response = await http.SendAsync(Preflight(method, AllowedOrigin));
        Assert.Null(Header(response, "Access-Control-Allow-Origin"));
    }

    [Fact]
    public async Task WithoutWebUrlNothingChanges()
    {
        await using RunningServer server = await RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}"]);
        Assert.Null(server.Services.GetService<WebEndpoint>());
        using var h2c = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(30) };
        Assert.StartsWith("VqDiffusion.Grpc: a gRPC service (HTTP/2).", await h2c.GetStringAsync(server.Address));
        using HttpResponseMessage file = await h2c.GetAsync(new Uri(new Uri(server.Address), "/playground.js"));
        Assert.Equal(HttpStatusCode.NotFound, file.StatusCode);
    }

    [Fact]
    public async Task ABadWebUrlStopsTheStartNamingTheKey()
    {
        var ex = await Assert.ThrowsAnyAsync<Exception>(() => RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}", "--Web:Url=https://127.0.0.1:8443"]));
        string problem = Assert.Single(StartupErrors.ConfigurationProblems(ex));
        Assert.StartsWith("Web:Url must be http://host:port", problem);
    }

    [Theory]
    [InlineData("http://127.0.0.1:50051", null, "http://127.0.0.1:50051")]
    [InlineData(null, "8080", "http://*:8080")]
    [InlineData(null, "8080;8081", "http://*:8080;http://*:8081")]
    [InlineData(null, null, WebEndpoint.DefaultUrls)]
    public void TheGrpcAddressesAreWhatKestrelWouldBindWithoutTheBrowserEndpoint(string? urls, string? httpPorts, string expected)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["http_ports"] = httpPorts }).Build();
        Assert.Equal(expected, WebEndpoint.HostingUrls(configuration, urls));
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080", true)]
    [InlineData("http://localhost:8080", true)]
    [InlineData("http://localhost:0", false)]
    [InlineData("http://*:8080", true)]
    [InlineData("http://[::1]:8080", true)]
    [InlineData("http://0.0.0.0:8080", true)]
    [InlineData("https://127.0.0.1:8080", false)]
    [InlineData("http://127.0.0.1", false)]
    [InlineData("http://127.0.0.1:8080/ui", false)]
    [InlineData("http://example.com:8080", false)]
    [InlineData("127.0.0.1:8080", false)]
    [InlineData("http://127.0.0.1:99999", false)]
    public void WebUrlMustBeAnHttpAddressWithAPort(string url, bool valid)
    {
        var result = new WebOptionsValidator().Validate(null, new WebOptions { Url = url });
        Assert.Equal(valid, result.Succeeded);
        if (!valid)
        {
            Assert.StartsWith("Web:Url must be http://host:port", Assert.Single(result.Failures!));
        }
    }

    [Fact]
    public void AllowedOriginsAreOriginsAndNeedAUrl()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Web:Url"] = "http://127.0.0.1:8080",
            ["Web:AllowedOrigins"] = "https://a.example, http://b.example:3000/",
            ["Web:AllowedOrigins:0"] = "*",
        }).Build();
        WebOptions read = WebOptions.From(configuration);
        Assert.Equal(["https://a.example", "http://b.example:3000/", "*"], read.AllowedOrigins);
        Assert.True(new WebOptionsValidator().Validate(null, read).Succeeded);
        Assert.True(WebEndpoint.TryNormalizeOrigin("http://b.example:3000/", out string normalized));
        Assert.Equal("http://b.example:3000", normalized);

        var bad = new WebOptionsValidator().Validate(null, new WebOptions { AllowedOrigins = ["https://a.example/path", "ftp://c.example", "a.example"] });
        Assert.Equal(4, bad.Failures!.Count());
        Assert.Single(bad.Failures!, f => f.StartsWith("Web:AllowedOrigins needs Web:Url", StringComparison.Ordinal));
        Assert.Equal(3, bad.Failures!.Count(f => f.StartsWith("Web:AllowedOrigins must list origins", StringComparison.Ordinal)));
    }

    private static HttpRequestMessage Preflight(Uri method, string origin)
    {
        var request = new HttpRequestMessage(HttpMethod.Options, method);
        request.Headers.TryAddWithoutValidation("Origin", origin);
        request.Headers.TryAddWithoutValidation("Access-Control-Request-Method", "POST");
        request.Headers.TryAddWithoutValidation("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web,x-user-agent");
        return request;
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? string.Join(",", values)
        : response.Content.Headers.TryGetValues(name, out var content) ? string.Join(",", content) : null;
}
