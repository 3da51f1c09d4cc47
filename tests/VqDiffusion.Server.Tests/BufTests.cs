using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
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

    /// <summary>
    /// The README's quick start, as a newcomer runs it: every <c>$buf curl</c> line of its bash blocks (continuations
    /// joined), verbatim but for the address, through bash from a folder with the repository's <c>tools/</c>.
    /// </summary>
    [Fact]
    public async Task TheReadmeQuickStartBufCurlLinesWork()
    {
        string readme = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "README.md"));
        int start = readme.IndexOf("## Quick start", StringComparison.Ordinal);
        Assert.True(start >= 0, "README.md has no Quick start section");
        int end = readme.IndexOf("\n## ", start, StringComparison.Ordinal);
        string section = readme[start..(end < 0 ? readme.Length : end)];
        var lines = new List<string>();
        foreach (Match block in Regex.Matches(section, "```bash\n(.*?)```", RegexOptions.Singleline))
        {
            lines.AddRange(block.Groups[1].Value.Replace("\\\n", " ", StringComparison.Ordinal).Split('\n').Select(l => l.Trim()));
        }

        Assert.Contains("buf=tools/node_modules/.bin/buf", lines);
        List<string> commands = lines.Where(l => l.StartsWith("$buf curl ", StringComparison.Ordinal)).ToList();
        _output.WriteLine(string.Join("\n", commands));
        Assert.Equal(4, commands.Count);
        Assert.All(commands, c => Assert.Contains("http://127.0.0.1:50051", c));

        string dir = Path.Combine(Path.GetTempPath(), "vqd-readme-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        Directory.CreateSymbolicLink(Path.Combine(dir, "tools"), Path.Combine(Fixtures.RepoRoot, "tools"));
        try
        {
            async Task<string> Run(string command)
            {
                string script = "set -euo pipefail\nbuf=tools/node_modules/.bin/buf\n" + command.Replace("http://127.0.0.1:50051", _server.Address, StringComparison.Ordinal);
                var (code, stdout, stderr) = await RunBashAsync(dir, script);
                Assert.True(code == 0, $"{command}\nexit {code}: {stderr}");
                return stdout;
            }

            string methods = await Run(commands.Single(c => c.Contains("--list-methods", StringComparison.Ordinal)));
            Assert.Contains("vqdiffusion.v1.VqDiffusionService/Generate", methods);

            // --emit-defaults shows the zero seed (and image index 0); the same call without it does not.
            string emitting = commands.Single(c => c.Contains("--emit-defaults", StringComparison.Ordinal));
            var withDefaults = ParseMessages(await Run(emitting));
            JsonElement started = withDefaults.Single(m => m.TryGetProperty("started", out _)).GetProperty("started");
            Assert.Equal("0", started.GetProperty("seed").GetString());
            JsonElement image = withDefaults.Single(m => m.TryGetProperty("image", out _)).GetProperty("image");
            Assert.Equal(0, image.GetProperty("index").GetInt32());
            byte[] expectedPng = Convert.FromBase64String(image.GetProperty("data").GetString()!);
            var plain = ParseMessages(await Run(emitting.Replace(" --emit-defaults", string.Empty, StringComparison.Ordinal)));
            Assert.False(plain.Single(m => m.TryGetProperty("started", out _)).GetProperty("started").TryGetProperty("seed", out _), "proto3 JSON omits a zero seed");

            // The save-the-image one-liner writes a PNG that decodes, and is that image.
            string saving = commands.Single(c => c.Contains("base64 -d > cat.png", StringComparison.Ordinal));
            await Run(saving);
            byte[] png = File.ReadAllBytes(Path.Combine(dir, "cat.png"));
            var decoded = ImageEncoder.DecodeRgb(png);
            Assert.Equal((32, 32), (decoded.Width, decoded.Height));
            Assert.Equal(expectedPng, png);

            string health = await Run(commands.Single(c => c.Contains("grpc.health.v1.Health/Check", StringComparison.Ordinal)));
            Assert.Contains("SERVING", health);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task ProtosPassBufLintStandard()
    {
        var (code, stdout, stderr) = await BufTool.RunAsync(Path.Combine(Fixtures.RepoRoot, "protos"), "lint");
        Assert.True(code == 0, stdout + stderr);
    }

    private static List<JsonElement> ParseMessages(string stdout)
    {
        var messages = new List<JsonElement>();
        var reader = new Utf8JsonReader(System.Text.Encoding.UTF8.GetBytes(stdout), new JsonReaderOptions { AllowMultipleValues = true });
        while (reader.Read())
        {
            using var doc = JsonDocument.ParseValue(ref reader);
            messages.Add(doc.RootElement.Clone());
        }

        return messages;
    }

    private static async Task<(int Code, string Stdout, string Stderr)> RunBashAsync(string workingDirectory, string script)
    {
        var psi = new ProcessStartInfo("bash")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout, await stderr);
    }
}
