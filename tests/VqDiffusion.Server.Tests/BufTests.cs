using System.Text.Json;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>An external client (buf curl, like grpcurl) against the running server, and buf lint.</summary>
public sealed class BufTests : IClassFixture<SharedServerFixture>
{
    private readonly RunningServer _server;
    private readonly ITestOutputHelper _output;

    public BufTests(SharedServerFixture fixture, ITestOutputHelper output)
    {
        _server = fixture.Server;
        _output = output;
    }

    [Fact]
    public async Task BufCurlListsTheServiceThroughReflection()
    {
        var (code, stdout, stderr) = await BufTool.RunAsync(Fixtures.RepoRoot, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", _server.Address);
        Assert.True(code == 0, stderr);
        Assert.Contains("vqdiffusion.v1.VqDiffusionService/Generate", stdout);
        Assert.Contains("vqdiffusion.v1.VqDiffusionService/GetModelInfo", stdout);
    }

    [Fact]
    public async Task BufCurlRunsGenerateFromJson()
    {
        string body = """{"prompts": ["a photo of a cat"], "numInferenceSteps": 10, "guidanceScale": 5, "seed": "0", "snapshots": {"everyNSteps": 5, "includeTokens": true}}""";
        var (code, stdout, stderr) = await BufTool.RunAsync(
            Fixtures.RepoRoot, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", body, _server.Address + "/vqdiffusion.v1.VqDiffusionService/Generate");
        Assert.True(code == 0, stderr);

        // buf curl prints each response message as a JSON object.
        var messages = new List<JsonElement>();
        var reader = new Utf8JsonReader(System.Text.Encoding.UTF8.GetBytes(stdout), new JsonReaderOptions { AllowMultipleValues = true });
        while (reader.Read())
        {
            using var doc = JsonDocument.ParseValue(ref reader);
            messages.Add(doc.RootElement.Clone());
        }

        var kinds = messages.Select(m => m.EnumerateObject().Single().Name).ToList();
        _output.WriteLine(string.Join(" ", kinds));
        Assert.Equal("queued", kinds[0]);
        Assert.Equal(10, kinds.Count(k => k == "progress"));
        Assert.Equal(2, kinds.Count(k => k == "snapshot"));
        Assert.Equal("completed", kinds[^1]);
        JsonElement started = messages.Single(m => m.TryGetProperty("started", out _)).GetProperty("started");
        Assert.Equal("0", started.TryGetProperty("seed", out var seed) ? seed.GetString() : "0");

        JsonElement image = messages.Single(m => m.TryGetProperty("image", out _)).GetProperty("image");
        Assert.Equal("image/png", image.GetProperty("mimeType").GetString());
        var png = ImageEncoder.DecodeRgb(Convert.FromBase64String(image.GetProperty("data").GetString()!));
        var golden = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "png", "pipeline_single_cfg_0.png")));
        PixelAssert.WithinDecoderRounding(golden.Rgb, png.Rgb, "buf curl image vs diffusers", _output);
    }

    [Fact]
    public async Task BufCurlGetModelInfo()
    {
        var (code, stdout, stderr) = await BufTool.RunAsync(
            Fixtures.RepoRoot, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", "{}", _server.Address + "/vqdiffusion.v1.VqDiffusionService/GetModelInfo");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(64, doc.RootElement.GetProperty("numCodes").GetInt32());
        Assert.Equal("tiny-ithq", doc.RootElement.GetProperty("modelId").GetString());
    }

    [Fact]
    public async Task BufCurlSeesInvalidArgument()
    {
        var (code, _, stderr) = await BufTool.RunAsync(
            Fixtures.RepoRoot, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", """{"prompts": ["a"], "truncationRate": 2}""", _server.Address + "/vqdiffusion.v1.VqDiffusionService/Generate");
        Assert.NotEqual(0, code);
        Assert.Contains("invalid_argument", stderr);
        Assert.Contains("truncation_rate must be in (0, 1]", stderr);
    }

    [Fact]
    public async Task ProtosPassBufLintStandard()
    {
        var (code, stdout, stderr) = await BufTool.RunAsync(Path.Combine(Fixtures.RepoRoot, "protos"), "lint");
        Assert.True(code == 0, stdout + stderr);
    }
}
