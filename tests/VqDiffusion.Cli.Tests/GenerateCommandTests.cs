using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Cli.Tests;

public sealed class GenerateCommandTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-cli-" + Guid.NewGuid().ToString("N"));

    public GenerateCommandTests(ITestOutputHelper output)
    {
        _output = output;
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Task<(int Code, string Out, string Err)> Run(params string[] args) => CliRunner.RunAsync(args);

    private string[] ArgsFor(GoldenPipelineRuns.Run run, string output) =>
        ["generate", "--model", Fixtures.TinyModel, .. CliRunner.GoldenFlags(run, _dir), "--output", output];

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
    public async Task GenerateWritesTheGoldenPngsInBatchOrder(string name)
    {
        var run = GoldenPipelineRuns.All(Fixtures.TinyGolden).Single(r => r.Name == name);
        string output = Path.Combine(_dir, name);
        var (code, _, err) = await Run(ArgsFor(run, output));
        Assert.True(code == 0, err);
        Assert.Contains($"seed: {run.Request.Seed}", err);
        string[] files = Directory.GetFiles(output).Select(Path.GetFileName).Order().ToArray()!;
        Assert.Equal(Enumerable.Range(0, run.Request.BatchSize).Select(i => $"{i:D3}.png"), files);
        for (int b = 0; b < run.Request.BatchSize; b++)
        {
            var expected = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "png", $"pipeline_{name}_{b}.png")));
            var actual = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(output, $"{b:D3}.png")));
            Assert.Equal((expected.Width, expected.Height), (actual.Width, actual.Height));
            PixelAssert.WithinDecoderRounding(expected.Rgb, actual.Rgb, $"{name} {b:D3}.png", _output);
        }
    }

    [Theory]
    [InlineData("--steps", "0", "--steps: num_inference_steps must be between 1 and 100")]
    [InlineData("--steps", "abc", "--steps must be an integer")]
    [InlineData("--guidance-scale", "-2", "--guidance-scale: guidance_scale must be")]
    [InlineData("--truncation-rate", "0", "--truncation-rate: truncation_rate must be in (0, 1]")]
    [InlineData("--images-per-prompt", "0", "--images-per-prompt: num_images_per_prompt must be between 1 and")]
    [InlineData("--format", "gif", "--format must be png, jpeg or webp")]
    [InlineData("--seed", "-1", "--seed must be an integer")]
    [InlineData("--bogus", "1", "unknown option '--bogus'")]
    public async Task BadInputExitsNonZeroWithOneLineReason(string flag, string value, string expected)
    {
        var (code, _, err) = await Run("generate", "--model", Fixtures.TinyModel, "--prompt", "a cat", "--output", Path.Combine(_dir, "bad"), flag, value);
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains(expected, err);
        Assert.StartsWith("vqd: error: ", err);
    }

    [Fact]
    public async Task MissingModelFolderIsAClearError()
    {
        var (code, _, err) = await Run("generate", "--model", Path.Combine(_dir, "nope"), "--prompt", "a cat", "--output", _dir);
        Assert.Equal(2, code);
        Assert.Contains("model_index.json does not exist", err);
    }

    [Fact]
    public async Task LatentsOfTheWrongShapeAreRejected()
    {
        string file = Path.Combine(_dir, "latents.json");
        File.WriteAllText(file, "[[1, 2, 3]]");
        var (code, _, err) = await Run("generate", "--model", Fixtures.TinyModel, "--prompt", "a cat", "--steps", "2", "--latents", file, "--output", _dir);
        Assert.Equal(2, code);
        Assert.Contains("row 0 must be an array of 64 integers", err);
    }

    [Theory]
    [InlineData("jpeg", "jpg")]
    [InlineData("webp", "webp")]
    public async Task OtherFormatsAreWritten(string format, string extension)
    {
        string output = Path.Combine(_dir, format);
        var (code, _, err) = await Run("generate", "--model", Fixtures.TinyModel, "--prompt", "a cat", "--steps", "2", "--seed", "3", "--format", format, "--output", output);
        Assert.True(code == 0, err);
        byte[] data = File.ReadAllBytes(Path.Combine(output, $"000.{extension}"));
        Assert.Equal(32, ImageEncoder.DecodeRgb(data).Width);
    }

    [Fact]
    public void TheVqdExecutableRunsEndToEnd()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "vqd.dll");
        string output = Path.Combine(_dir, "process");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (string a in new[] { dll, "generate", "--model", Fixtures.TinyModel, "--prompt", "a photo of a cat", "--steps", "10", "--guidance-scale", "5", "--seed", "0", "--output", output })
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        string err = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, err);
        Assert.Contains("10/10", err);
        var expected = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "png", "pipeline_single_cfg_0.png")));
        var actual = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(output, "000.png")));
        PixelAssert.WithinDecoderRounding(expected.Rgb, actual.Rgb, "vqd process 000.png", _output);
    }
}
