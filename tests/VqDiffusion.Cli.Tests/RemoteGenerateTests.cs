using System.Globalization;
using System.Text.Json;
using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests;

/// <summary><c>vqd generate --server URL</c> against a real server in this process.</summary>
public sealed class RemoteGenerateTests : IClassFixture<SharedServerFixture>, IDisposable
{
    private readonly RunningServer _server;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-cli-remote-" + Guid.NewGuid().ToString("N"));

    public RemoteGenerateTests(SharedServerFixture fixture)
    {
        _server = fixture.Server;
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Task<(int Code, string Out, string Err)> Run(params string[] args) => CliRunner.RunAsync(args);

    private List<string> FlagsFor(GoldenPipelineRuns.Run run) => CliRunner.GoldenFlags(run, _dir);

    private async Task AssertRemoteEqualsLocal(string name, List<string> flags, string extension)
    {
        string local = Path.Combine(_dir, name + "-local");
        string remote = Path.Combine(_dir, name + "-remote");
        var (localCode, _, localErr) = await Run(["generate", "--model", Fixtures.TinyModel, .. flags, "--output", local]);
        Assert.True(localCode == 0, localErr);
        var (remoteCode, _, remoteErr) = await Run(["generate", "--server", _server.Address, .. flags, "--output", remote]);
        Assert.True(remoteCode == 0, remoteErr);

        string[] localFiles = Directory.GetFiles(local).Select(Path.GetFileName).Order().ToArray()!;
        string[] remoteFiles = Directory.GetFiles(remote).Select(Path.GetFileName).Order().ToArray()!;
        Assert.NotEmpty(localFiles);
        Assert.All(localFiles, f => Assert.EndsWith("." + extension, f));
        Assert.Equal(localFiles, remoteFiles);
        foreach (string file in localFiles)
        {
            Assert.True(File.ReadAllBytes(Path.Combine(local, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(remote, file))), $"{name}: {file} differs between --model and --server");
        }

        // Same summary line (seed and count) in both modes.
        Assert.Equal(localErr.Trim().Split('\n')[^1].Replace(local, "DIR", StringComparison.Ordinal), remoteErr.Trim().Split('\n')[^1].Replace(remote, "DIR", StringComparison.Ordinal));
    }

    public static TheoryData<string> RunNames()
    {
        var data = new TheoryData<string>();
        foreach (var run in GoldenPipelineRuns.All(Fixtures.TinyGolden).Where(r => r.Request.NumInferenceSteps <= 12))
        {
            data.Add(run.Name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(RunNames))]
    public async Task ServerWritesTheSameFilesAsLocal(string name)
    {
        var run = GoldenPipelineRuns.All(Fixtures.TinyGolden).Single(r => r.Name == name);
        await AssertRemoteEqualsLocal(name, FlagsFor(run), "png");
    }

    [Theory]
    [InlineData("jpeg", "jpg", "75")]
    [InlineData("webp", "webp", "90")]
    public async Task ServerWritesTheSameFilesAsLocalInOtherFormats(string format, string extension, string quality)
    {
        List<string> flags = ["--prompt", "a photo of a cat", "--prompt", "a red car", "--steps", "7", "--guidance-scale", "3", "--truncation-rate", "0.9", "--seed", "123", "--format", format, "--quality", quality];
        await AssertRemoteEqualsLocal(format, flags, extension);
    }

    [Fact]
    public async Task TheProgressBarAndSeedComeFromTheStream()
    {
        string output = Path.Combine(_dir, "progress");
        var (code, _, err) = await Run("generate", "--server", _server.Address, "--prompt", "a photo of a cat", "--steps", "10", "--output", output);
        Assert.True(code == 0, err);
        Assert.Contains("10/10", err);
        Assert.Matches(@"seed: \d+; wrote 1 image\(s\) to ", err);
        Assert.True(File.Exists(Path.Combine(output, "000.png")));
    }

    [Theory]
    [InlineData("--truncation-rate", "2", "--truncation-rate: truncation_rate must be in (0, 1]")]
    [InlineData("--steps", "0", "--steps: num_inference_steps must be between 1 and 100")]
    [InlineData("--images-per-prompt", "9", "--images-per-prompt: num_images_per_prompt must be between 1 and 8")]
    [InlineData("--guidance-scale", "-2", "--guidance-scale: guidance_scale must be")]
    [InlineData("--images-per-prompt", "0", "--images-per-prompt: num_images_per_prompt must be between 1 and 8, got 0.")]
    [InlineData("--quality", "0", "--quality must be between 1 and 100")]
    [InlineData("--device", "cuda", "--device cannot be used with --server")]
    [InlineData("--dtype", "float16", "--dtype cannot be used with --server")]
    [InlineData("--variant", "fp16", "--variant cannot be used with --server")]
    [InlineData("--model", "models/tiny-ithq", "--model and --server cannot be used together")]
    public async Task BadInputExitsWithTwoAndNamesTheFlag(string flag, string value, string expected)
    {
        string output = Path.Combine(_dir, "bad");
        var (code, _, err) = await Run("generate", "--server", _server.Address, "--prompt", "a cat", "--output", output, flag, value);
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith("vqd: error: ", err);
        Assert.Contains(expected, err);
        Assert.False(Directory.Exists(output), "no output folder for a rejected request");
    }

    [Fact]
    public async Task ServerLimitsNameTheFlag()
    {
        var (code, _, err) = await Run("generate", "--server", _server.Address, "--prompt", "a cat", "--prompt", new string('x', 3000), "--output", Path.Combine(_dir, "long"));
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains("vqd: error: --prompt[1]: prompts[1] has 3000 characters; at most 2048 are allowed.", err);
    }

    [Theory]
    [InlineData("localhost:5000")]
    [InlineData("ftp://localhost:5000")]
    public async Task TheServerMustBeAnHttpUrl(string url)
    {
        var (code, _, err) = await Run("generate", "--server", url, "--prompt", "a cat", "--output", _dir);
        Assert.Equal(2, code);
        Assert.Contains("--server must be an http:// or https:// URL", err);
    }

    [Fact]
    public async Task AnUnreachableServerExitsWithOne()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var (code, _, err) = await Run("generate", "--server", $"http://127.0.0.1:{port}", "--prompt", "a cat", "--steps", "2", "--output", Path.Combine(_dir, "none"));
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith($"vqd: error: server http://127.0.0.1:{port}: Unavailable", err);
    }
}
