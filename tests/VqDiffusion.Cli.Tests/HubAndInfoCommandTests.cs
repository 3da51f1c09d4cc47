using System.Text.Json;
using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests;

/// <summary><c>vqd generate --model org/name[@rev]</c> through a Hub stand-in, and <c>vqd info FILE</c>.</summary>
public sealed class HubAndInfoCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-cli-hub-" + Guid.NewGuid().ToString("N"));

    public HubAndInfoCommandTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static async Task<(int Code, string Out, string Err)> Run(Func<string, string?>? environment, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await CliApp.RunAsync(args, stdout, stderr, environment, CancellationToken.None);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static string[] Flags(string output, params string[] extra) =>
        ["--prompt", "a photo of a cat", "--steps", "3", "--seed", "5", "--guidance-scale", "4", "--truncation-rate", "0.9", .. extra, "--output", output];

    [Fact]
    public async Task AHubIdIsDownloadedWithProgressThenUsedOfflineAndGivesTheFoldersImage()
    {
        await using FakeHubServer hub = await TinyHubRepo.StartAsync();
        string cache = Path.Combine(_dir, "hf", "hub");
        Func<string, string?> env = name => name switch
        {
            "HF_HOME" => Path.Combine(_dir, "hf"),
            "HF_ENDPOINT" => hub.Endpoint,
            _ => null,
        };

        string fromHub = Path.Combine(_dir, "hub");
        var (code, _, err) = await Run(env, ["generate", "--model", TinyHubRepo.RepoId, .. Flags(fromHub)]);
        Assert.True(code == 0, err);
        Assert.Contains($"{TinyHubRepo.TransformerSafetensors} ", err); // the download progress on stderr
        Assert.Matches(@"file \d+/\d+ ", err);
        Assert.True(Directory.Exists(Path.Combine(cache, "models--test-org--tiny-ithq", "snapshots", TinyHubRepo.MainCommit)));

        string fromFolder = Path.Combine(_dir, "folder");
        (code, _, err) = await Run(null, ["generate", "--model", Fixtures.TinyModel, .. Flags(fromFolder)]);
        Assert.True(code == 0, err);
        byte[] hubPng = File.ReadAllBytes(Path.Combine(fromHub, "000.png"));
        Assert.Equal(ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(fromFolder, "000.png"))).Rgb, ImageEncoder.DecodeRgb(hubPng).Rgb);

        var (infoCode, info, _) = await Run(null, "info", Path.Combine(fromHub, "000.png"));
        Assert.Equal(0, infoCode);
        Assert.Contains("a photo of a cat\nSteps: 3, Sampler: diffusers, CFG scale: 4, Seed: 5, Size: 32x32, Model: test-org/tiny-ithq, Model revision: main, ", info.ReplaceLineEndings("\n"));

        int before = hub.Requests.Count;
        string offline = Path.Combine(_dir, "offline");
        (code, _, err) = await Run(name => name == "HF_HUB_OFFLINE" ? "1" : env(name), ["generate", "--model", TinyHubRepo.RepoId, "--quiet", .. Flags(offline)]);
        Assert.True(code == 0, err);
        Assert.Equal(before, hub.Requests.Count);
        Assert.Equal(hubPng, File.ReadAllBytes(Path.Combine(offline, "000.png")));
    }

    [Fact]
    public async Task AnUnknownHubIdExitsWithTheHttpStatus()
    {
        await using FakeHubServer hub = await TinyHubRepo.StartAsync();
        Func<string, string?> env = name => name switch
        {
            "HF_HUB_CACHE" => Path.Combine(_dir, "cache"),
            "HF_ENDPOINT" => hub.Endpoint,
            _ => null,
        };
        var (code, _, err) = await Run(env, ["generate", "--model", "test-org/no-such-model", .. Flags(Path.Combine(_dir, "out"))]);
        Assert.Equal(2, code);
        Assert.StartsWith("vqd: error: cannot load model: test-org/no-such-model: ", err);
        Assert.Contains("HTTP 404", err);
    }

    [Theory]
    [InlineData("png", "png")]
    [InlineData("jpeg", "jpg")]
    [InlineData("webp", "webp")]
    public async Task InfoPrintsTheParametersOfEveryFormat(string format, string extension)
    {
        string output = Path.Combine(_dir, format);
        var (code, _, err) = await CliRunner.RunAsync(["generate", "--model", Fixtures.TinyModel, .. Flags(output, "--format", format, "--images-per-prompt", "2")]);
        Assert.True(code == 0, err);

        string file = Path.Combine(output, $"001.{extension}");
        var (infoCode, info, infoErr) = await CliRunner.RunAsync("info", file);
        Assert.True(infoCode == 0, infoErr);
        string text = info.ReplaceLineEndings("\n");
        Assert.Contains("parameters:\na photo of a cat\nSteps: 3, Sampler: diffusers, CFG scale: 4, Seed: 5, Size: 32x32, Model: tiny-ithq, Truncation rate: 0.9, Batch size: 2, Batch pos: 1, Version: VqDiffusion.Grpc ", text);

        var (jsonCode, json, _) = await CliRunner.RunAsync("info", "--json", file);
        Assert.Equal(0, jsonCode);
        using JsonDocument doc = JsonDocument.Parse(json);
        if (format == "png")
        {
            Assert.Equal(5UL, doc.RootElement.GetProperty("seed").GetUInt64());
            Assert.Equal(1, doc.RootElement.GetProperty("image_index").GetInt32());
            Assert.Equal("a photo of a cat", doc.RootElement.GetProperty("prompts")[0].GetString());
        }
        else
        {
            Assert.Equal("a photo of a cat", doc.RootElement.GetProperty("prompt").GetString());
            Assert.Equal("5", doc.RootElement.GetProperty("settings").GetProperty("Seed").GetString());
        }
    }

    [Fact]
    public async Task InfoOnAFileWithoutParametersOrNotAnImageFails()
    {
        string plain = Path.Combine(_dir, "plain.png");
        File.WriteAllBytes(plain, ImageEncoder.Encode(new Model.Pipelines.GeneratedImage(0, 0, 4, 4, new byte[48]), ImageFormat.Png));
        var (code, _, err) = await CliRunner.RunAsync("info", plain);
        Assert.Equal(1, code);
        Assert.Contains("no generation parameters", err);

        string text = Path.Combine(_dir, "not-an-image.png");
        File.WriteAllText(text, "hello");
        (code, _, err) = await CliRunner.RunAsync("info", text);
        Assert.Equal(2, code);
        Assert.Contains("not a PNG, JPEG or WebP file", err);

        (code, _, err) = await CliRunner.RunAsync("info");
        Assert.Equal(2, code);
        Assert.Contains("info needs a FILE", err);
    }
}
