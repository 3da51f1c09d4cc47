using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Cli.Tests;

/// <summary>
/// <c>vqd generate --sampler vq-diffusion</c> and the editing flags: every case of the improved golden set gives the
/// original's pixels locally and byte-identical files through a server; bad values exit 2 naming the flag.
/// </summary>
public sealed class SamplerCommandTests : IClassFixture<ImprovedServerFixture>, IDisposable
{
    private readonly RunningServer _server;
    private readonly ITestOutputHelper _output;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-cli-sampler-" + Guid.NewGuid().ToString("N"));

    public SamplerCommandTests(ImprovedServerFixture fixture, ITestOutputHelper output)
    {
        _server = fixture.Server;
        _output = output;
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Golden => ImprovedGoldenCases.GoldenDir;

    private static string Model => ImprovedGoldenCases.ModelPath(Golden);

    private static Task<(int Code, string Out, string Err)> Run(params string[] args) => CliRunner.RunAsync(args);

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in ImprovedGoldenCases.All(Golden))
        {
            data.Add(c.Name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task CaseGivesTheOriginalsPixelsLocallyAndTheSameFilesThroughAServer(string name)
    {
        ImprovedGoldenCases.Case c = ImprovedGoldenCases.Get(Golden, name);
        List<string> flags = CliRunner.ImprovedFlags(c, _dir);
        string local = Path.Combine(_dir, name + "-local");
        string remote = Path.Combine(_dir, name + "-remote");
        var (code, _, err) = await Run(["generate", "--model", Model, .. flags, "--output", local]);
        Assert.True(code == 0, err);
        Assert.Contains($"{c.Steps}/{c.Steps}", err);
        Assert.Contains($"seed: {c.Request.Seed}; wrote {c.Request.BatchSize} image(s)", err);

        var golden = ImprovedGoldenCases.Load(Golden, c.File);
        byte[] expected = golden["images_uint8_nhwc"].data<byte>().ToArray();
        int size = expected.Length / c.Request.BatchSize;
        for (int i = 0; i < c.Request.BatchSize; i++)
        {
            var actual = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(local, $"{i:D3}.png")));
            PixelAssert.WithinDecoderRounding(expected.AsSpan(c.Rows[i] * size, size), actual.Rgb, $"{name} {i:D3}.png", _output);
        }

        var (remoteCode, _, remoteErr) = await Run(["generate", "--server", _server.Address, .. flags, "--output", remote]);
        Assert.True(remoteCode == 0, remoteErr);
        Assert.Contains($"{c.Steps}/{c.Steps}", remoteErr);
        string[] files = Directory.GetFiles(local).Select(Path.GetFileName).Order().ToArray()!;
        Assert.Equal(files, Directory.GetFiles(remote).Select(Path.GetFileName).Order().ToArray());
        foreach (string file in files)
        {
            Assert.True(File.ReadAllBytes(Path.Combine(local, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(remote, file))), $"{name}: {file} differs between --model and --server");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnImageSourceAndAPngMaskInpaintLocallyAndRemotely(bool remote)
    {
        // The source image: the decoded golden edit source; the mask: the right half of the image.
        string source = Path.Combine(_dir, "source.png");
        File.Copy(Path.Combine(Fixtures.TinyGolden, "png", "pipeline_single_cfg_0.png"), source);
        var mask = new byte[32 * 32 * 3];
        for (int i = 0; i < 32 * 32; i++)
        {
            mask[i * 3] = (byte)(i % 32 >= 16 ? 255 : 0);
        }

        string maskFile = Path.Combine(_dir, "mask.png");
        File.WriteAllBytes(maskFile, ImageEncoder.Encode(new GeneratedImage(0, 0, 32, 32, mask), ImageFormat.Png));
        string[] common = ["--prompt", "a red car", "--seed", "3", "--sampler", "vq-diffusion", "--speed", "10", "--edit-image", source, "--mask", maskFile];
        string a = Path.Combine(_dir, $"inpaint-{remote}-a");
        string b = Path.Combine(_dir, $"inpaint-{remote}-b");
        string[] where = remote ? ["--server", _server.Address] : ["--model", Model];
        var (code, _, err) = await Run(["generate", .. where, .. common, "--output", a]);
        Assert.True(code == 0, err);
        Assert.Contains("11/11", err);
        (code, _, err) = await Run(["generate", .. where, .. common, "--output", b]);
        Assert.True(code == 0, err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "000.png")), File.ReadAllBytes(Path.Combine(b, "000.png")));
    }

    [Theory]
    [InlineData("--sampler", "ddim", "--sampler must be diffusers or vq-diffusion")]
    [InlineData("--prior", "best", "--prior must be none, high-quality or purity")]
    [InlineData("--speed", "fast", "--speed must be a number")]
    [InlineData("--cf-embeddings", "model", "--cf-embeddings must be learned or empty-prompt")]
    [InlineData("--strength", "0.5", "give --edit-tokens FILE or --edit-image FILE")]
    [InlineData("--unmask-schedule", "/no/such/schedule.json", "--unmask-schedule /no/such/schedule.json")]
    public async Task BadSamplerFlagsExitWithTwo(string flag, string value, string expected)
    {
        foreach (string[] where in new[] { new[] { "--model", Model }, ["--server", _server.Address] })
        {
            var (code, _, err) = await Run(["generate", .. where, "--prompt", "a cat", "--output", Path.Combine(_dir, "bad"), flag, value]);
            Assert.Equal(2, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains(expected, err);
        }
    }

    [Theory]
    [InlineData(new[] { "--sampler", "vq-diffusion", "--speed", "0" }, "--speed: sampler.speed must be a number in (0, 100]")]
    [InlineData(new[] { "--speed", "2" }, "--speed: sampler.speed is an option of the vq-diffusion sampler")]
    [InlineData(new[] { "--sampler", "vq-diffusion", "--prior", "purity" }, "--unmask-schedule: the original's default unmask schedule for T = 100 unmasks 1024 tokens")]
    [InlineData(new[] { "--sampler", "vq-diffusion", "--steps", "20" }, "--steps: num_inference_steps must be 100 (or unset)")]
    [InlineData(new[] { "--edit-tokens", "TOKENS", "--strength", "1.5" }, "--strength: edit.strength must be in (0, 1]")]
    [InlineData(new[] { "--edit-tokens", "TOKENS" }, "--strength: edit needs edit.strength")]
    [InlineData(new[] { "--edit-tokens", "BADTOKENS", "--strength", "0.5" }, "--edit-tokens[3]: edit.source_tokens[3] = 64 is not an image token")]
    [InlineData(new[] { "--edit-image", "SMALLPNG", "--strength", "0.5" }, "--edit-image: edit.source_image must be an RGB image of the model's output size 32 × 32, got 8 × 8")]
    [InlineData(new[] { "--edit-tokens", "TOKENS", "--mask", "SMALLPNG" }, "--mask: edit.mask_image must be a mask of the model's output size 32 × 32, got 8 × 8")]
    [InlineData(new[] { "--edit-tokens", "TOKENS", "--mask", "NOTPNG" }, "--mask")]
    [InlineData(new[] { "--sampler", "vq-diffusion", "--edit-tokens", "TOKENS", "--strength", "0.5", "--guidance-scale", "4" }, "--guidance-scale: guidance_scale must be at most 1")]
    public async Task InvalidSamplerAndEditRequestsNameTheFlagLocallyAndRemotely(string[] flags, string expected)
    {
        string tokens = Path.Combine(_dir, "tokens.json");
        File.WriteAllText(tokens, "[[" + string.Join(",", Enumerable.Repeat(3, 64)) + "]]");
        string badTokens = Path.Combine(_dir, "bad-tokens.json");
        File.WriteAllText(badTokens, "[[" + string.Join(",", Enumerable.Range(0, 64).Select(p => p == 3 ? 64 : 1)) + "]]");
        string small = Path.Combine(_dir, "small.png");
        File.WriteAllBytes(small, ImageEncoder.Encode(new GeneratedImage(0, 0, 8, 8, new byte[8 * 8 * 3]), ImageFormat.Png));
        string notPng = Path.Combine(_dir, "not.png");
        File.WriteAllText(notPng, "not a png");
        string[] resolved = flags.Select(f => f switch { "TOKENS" => tokens, "BADTOKENS" => badTokens, "SMALLPNG" => small, "NOTPNG" => notPng, _ => f }).ToArray();
        foreach (string[] where in new[] { new[] { "--model", Model }, ["--server", _server.Address] })
        {
            string output = Path.Combine(_dir, "rejected");
            var (code, _, err) = await Run(["generate", .. where, "--prompt", "a cat", "--seed", "1", .. resolved, "--output", output]);
            Assert.True(code == 2, $"{string.Join(' ', where)}: exit {code}: {err}");
            Assert.Single(err.Trim().Split('\n'));
            Assert.StartsWith("vqd: error: ", err);
            Assert.Contains(expected, err);
            Assert.False(Directory.Exists(output));
        }
    }
}
