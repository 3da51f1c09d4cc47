using System.Net;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Telemetry;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>The Prometheus endpoint of a real server (Kestrel on loopback ports), scraped over HTTP/1.1 after real requests.</summary>
public sealed class MetricsTests
{
    private readonly ITestOutputHelper _output;

    public MetricsTests(ITestOutputHelper output)
    {
        _output = output;
    }

    private static Task<RunningServer> StartWithMetricsAsync() =>
        RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}", "--Metrics:Port=0", "--Metrics:Host=127.0.0.1"]);

    private static async Task<PrometheusText> ScrapeAsync(HttpClient http, Uri url)
    {
        using HttpResponseMessage response = await http.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version11, response.Version);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        return PrometheusText.Parse(await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ScrapeAfterRequestsHasTheSeriesAndCounts()
    {
        await using RunningServer server = await StartWithMetricsAsync();
        Uri url = server.Services.GetRequiredService<MetricsServer>().Address!;
        Assert.Equal("127.0.0.1", url.Host);
        Assert.NotEqual(new Uri(server.Address).Port, url.Port);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };

        PrometheusText idle = await ScrapeAsync(http, url);
        Assert.Equal(1, idle.Value("vqd_model_serving"));
        Assert.Equal(1, idle.Value("vqd_model_state", "state=ready"));
        Assert.Equal(0, idle.Value("vqd_model_state", "state=loading"));
        Assert.Equal(0, idle.Value("vqd_model_state", "state=failed"));
        Assert.True(idle.Value("vqd_model_load_seconds") > 0);
        Assert.Equal(0, idle.Value("vqd_queue_length"));
        Assert.Null(idle.ValueOrNull("vqd_requests_total", "method=Generate", "code=OK"));

        // Three requests at once (1, 2 and 2 images; 3, 4 and 5 steps), one invalid, one GetModelInfo.
        GenerateRequest[] requests =
        [
            new() { Prompts = { "a red car" }, NumInferenceSteps = 3, Seed = 1 },
            new() { Prompts = { "a cute puppy", "a blue bird" }, NumInferenceSteps = 4, Seed = 2 },
            new() { Prompts = { "a green tree" }, NumImagesPerPrompt = 2, NumInferenceSteps = 5, Seed = 3 },
        ];
        List<GenerateResponse>[] streams = await Task.WhenAll(requests.Select(r => StreamCollector.ReadAllAsync(server.Client.Generate(r))));
        int steps = streams.Sum(s => s.Count(e => e.Progress is not null));
        int images = streams.Sum(s => s.Count(e => e.Image is not null));
        Assert.Equal(3 + 4 + 5, steps);
        Assert.Equal(1 + 2 + 2, images);

        var invalid = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "x" }, NumImagesPerPrompt = 1000 })));
        Assert.Equal(StatusCode.InvalidArgument, invalid.StatusCode);
        await server.Client.GetModelInfoAsync(new GetModelInfoRequest());

        // The worker reports its active runs between steps, and a call is counted once its handler has returned, which
        // can be just after the client has its answer (and the exporter may serve a scrape cached for 300 ms): wait
        // (bounded) until the server is back at rest and has counted the last call.
        PrometheusText scrape = await ScrapeAsync(http, url);
        for (int i = 0; i < 100 && (scrape.Value("vqd_active_runs") != 0 || scrape.ValueOrNull("vqd_requests_total", "method=GetModelInfo", "code=OK") is null); i++)
        {
            await Task.Delay(100);
            scrape = await ScrapeAsync(http, url);
        }

        _output.WriteLine(scrape.Text);
        Assert.Equal(0, scrape.Value("vqd_active_runs"));
        Assert.Equal(0, scrape.Value("vqd_queue_length"));
        Assert.Equal(1, scrape.Value("vqd_model_serving"));

        Assert.Equal(3, scrape.Value("vqd_requests_total", "method=Generate", "code=OK"));
        Assert.Equal(1, scrape.Value("vqd_requests_total", "method=Generate", "code=INVALID_ARGUMENT"));
        Assert.Equal(1, scrape.Value("vqd_requests_total", "method=GetModelInfo", "code=OK"));
        Assert.Equal(images, scrape.Value("vqd_images_generated_total"));

        Assert.Equal(steps, scrape.Value("vqd_step_duration_seconds_count"));
        Assert.Equal(steps, scrape.Value("vqd_step_duration_seconds_bucket", "le=+Inf"));
        Assert.True(scrape.Value("vqd_step_duration_seconds_sum") > 0);
        foreach (string histogram in new[] { "vqd_queue_time_seconds", "vqd_first_progress_seconds", "vqd_decode_seconds" })
        {
            Assert.Equal(3, scrape.Value(histogram + "_count"));
            Assert.Equal(3, scrape.Value(histogram + "_bucket", "le=+Inf"));
        }

        // Buckets are cumulative and end at the count.
        var stepBuckets = scrape.Samples.Where(s => s.Name == "vqd_step_duration_seconds_bucket").Select(s => s.Value).ToList();
        Assert.True(stepBuckets.Count > 5);
        Assert.Equal(stepBuckets.Order(), stepBuckets);
        Assert.True(scrape.Value("vqd_first_progress_seconds_sum") >= scrape.Value("vqd_queue_time_seconds_sum"));
    }

    [Fact]
    public async Task MetricsPortServesOnlyMetricsAndTheGrpcPortNoMetrics()
    {
        await using RunningServer server = await StartWithMetricsAsync();
        Uri url = server.Services.GetRequiredService<MetricsServer>().Address!;
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };

        PrometheusText scrape = await ScrapeAsync(http, url);
        Assert.Contains("vqd_queue_length", scrape.Names);

        // What a Prometheus server asks for: OpenMetrics, with the same sample names.
        using (var request = new HttpRequestMessage(HttpMethod.Get, url))
        {
            request.Headers.TryAddWithoutValidation("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5");
            using HttpResponseMessage response = await http.SendAsync(request);
            Assert.Equal("application/openmetrics-text", response.Content.Headers.ContentType?.MediaType);
            string text = await response.Content.ReadAsStringAsync();
            Assert.EndsWith("# EOF\n", text);
            PrometheusText openMetrics = PrometheusText.Parse(text);
            Assert.Equal(0, openMetrics.Value("vqd_queue_length"));
            Assert.Equal(1, openMetrics.Value("vqd_model_serving"));
            Assert.Contains("# TYPE vqd_queue_length gauge", text);
        }

        using (HttpResponseMessage other = await http.GetAsync(new Uri(url, "/other")))
        {
            Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        }

        // The gRPC port (HTTP/2 cleartext) has no /metrics.
        using var h2c = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(30) };
        using (HttpResponseMessage onGrpcPort = await h2c.GetAsync(new Uri(new Uri(server.Address), "/metrics")))
        {
            Assert.Equal(HttpStatusCode.NotFound, onGrpcPort.StatusCode);
        }

        // And the metrics port (HTTP/1.1 only) serves no gRPC.
        using var channel = GrpcChannel.ForAddress(new Uri(url, "/"));
        var client = new VqDiffusionService.VqDiffusionServiceClient(channel);
        var error = await Assert.ThrowsAsync<RpcException>(async () => await client.GetModelInfoAsync(new GetModelInfoRequest(), deadline: DateTime.UtcNow.AddSeconds(30)));
        Assert.NotEqual(StatusCode.DeadlineExceeded, error.StatusCode);
        _output.WriteLine($"gRPC on the metrics port: {error.StatusCode} {error.Status.Detail}");
    }

    [Fact]
    public async Task WithoutMetricsPortThereIsNoEndpoint()
    {
        await using RunningServer server = await RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}"]);
        Assert.Null(server.Services.GetService<MetricsServer>());
        Assert.Null(server.Services.GetService<MeterProvider>());

        // The instruments still record (for an in-process listener) and calls succeed.
        await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        using var h2c = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, Timeout = TimeSpan.FromSeconds(30) };
        using HttpResponseMessage response = await h2c.GetAsync(new Uri(new Uri(server.Address), "/metrics"));
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }
}
