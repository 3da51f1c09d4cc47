using System.Net;
using System.Net.Sockets;
using System.Text;
using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests;

/// <summary>
/// The same bad flags through <c>vqd generate --server</c> (the built vqd.dll), the Python example
/// (<c>clients/python/examples/generate.py</c>) and the TypeScript example (<c>clients/typescript/examples/generate.ts</c>,
/// compiled by the package's tsc): the same exit code and the same one stderr line (vqd's without its <c>vqd: </c> prefix), whether the
/// flag is rejected while parsing, while reading a file, by a GetModelInfo-based check or by the server's INVALID_ARGUMENT.
/// </summary>
public sealed class ClientParityTests : IClassFixture<SharedServerFixture>, IClassFixture<CompiledTypeScriptExample>, IDisposable
{
    /// <summary>Name → flags ({server}, {dead} and {dir} are replaced), vqd's exit code and a part of vqd's line.</summary>
    private static readonly Dictionary<string, (string[] Flags, int Code, string Line)> Cases = new()
    {
        // Parsing (GenerateOptions.Parse): numbers in .NET's invariant syntax.
        ["steps-word"] = (Base("--steps", "ten"), 2, "error: --steps must be an integer, got 'ten'."),
        ["steps-decimal"] = (Base("--steps", "1.5"), 2, "error: --steps must be an integer, got '1.5'."),
        ["steps-space"] = (Base("--steps", " 5"), 2, "error: --steps must be an integer, got ' 5'."),
        ["steps-underscore"] = (Base("--steps", "1_0"), 2, "error: --steps must be an integer, got '1_0'."),
        ["steps-overflow"] = (Base("--steps", "2147483648"), 2, "error: --steps must be an integer, got '2147483648'."),
        ["steps-no-value"] = (Base("--steps"), 2, "error: --steps needs a value."),
        ["guidance-word"] = (Base("--guidance-scale", "high"), 2, "error: --guidance-scale must be a number, got 'high'."),
        ["guidance-inf"] = (Base("--guidance-scale", "inf"), 2, "error: --guidance-scale must be a number, got 'inf'."),
        ["guidance-exponent-only"] = (Base("--guidance-scale", "1e"), 2, "error: --guidance-scale must be a number, got '1e'."),
        ["truncation-comma"] = (Base("--truncation-rate", "0,5"), 2, "error: --truncation-rate must be a number, got '0,5'."),
        ["seed-negative"] = (Base("--seed", "-1"), 2, "error: --seed must be an integer between 0 and 18446744073709551615, got '-1'."),
        ["seed-plus"] = (Base("--seed", "+1"), 2, "error: --seed must be an integer between 0 and 18446744073709551615, got '+1'."),
        ["seed-overflow"] = (Base("--seed", "18446744073709551616"), 2, "error: --seed must be an integer between 0 and 18446744073709551615, got '18446744073709551616'."),
        ["seed-arabic-digit"] = (Base("--seed", "\u0661"), 2, "error: --seed must be an integer between 0 and 18446744073709551615, got '\u0661'."),
        ["format"] = (Base("--format", "gif"), 2, "error: --format must be png, jpeg or webp, got 'gif'."),
        ["quality-zero"] = (Base("--quality", "0"), 2, "error: --quality must be between 1 and 100, got 0."),
        ["sampler"] = (Base("--sampler", "ddim"), 2, "error: --sampler must be diffusers or vq-diffusion, got 'ddim'."),
        ["prior"] = (Base("--prior", "best"), 2, "error: --prior must be none, high-quality or purity, got 'best'."),
        ["cf-embeddings-model"] = (Base("--cf-embeddings", "model"), 2, "error: --cf-embeddings must be learned or empty-prompt, got 'model'."),
        ["strength-word"] = (Base("--strength", "half"), 2, "error: --strength must be a number, got 'half'."),
        ["unknown"] = (Base("--bogus"), 2, "error: unknown option '--bogus'."),
        ["unknown-inline"] = (Base("--bogus=1"), 2, "error: unknown option '--bogus=1'."),
        ["positional"] = (Base("stray"), 2, "error: unknown option 'stray'."),
        ["device"] = (Base("--device", "cuda"), 2, "error: --device cannot be used with --server (the server chooses its device, dtype and weights)."),
        ["model-and-server"] = (Base("--model", "models/tiny-ithq"), 2, "error: --model and --server cannot be used together (--model runs locally, --server asks a server)."),
        ["two-sources"] = (Base("--edit-tokens", "{dir}/a.json", "--edit-image", "{dir}/b.png"), 2, "error: --edit-tokens and --edit-image cannot be used together (one source)."),
        ["strength-without-source"] = (Base("--strength", "0.5"), 2, "error: --strength and --mask edit a source: give --edit-tokens FILE or --edit-image FILE."),
        ["api-key-empty"] = (Base("--api-key="), 2, "error: --api-key must not be empty."),
        ["api-key-space"] = (Base("--api-key", "two words"), 2, "error: --api-key must be printable ASCII without spaces."),
        ["api-key-non-ascii"] = (Base("--api-key", "ключ-0123456789abcdef"), 2, "error: --api-key must be printable ASCII without spaces."),
        ["no-prompt"] = (["--server", "{server}", "--output", "{dir}/out"], 2, "error: at least one --prompt is required."),
        ["no-output"] = (["--server", "{server}", "--prompt", "a cat"], 2, "error: --output DIR is required."),
        ["empty-output"] = (["--server", "{server}", "--prompt", "a cat", "--output="], 2, "error: --output DIR is required."),

        // The server URL (GenerateRemoteAsync's first check).
        ["server-host-port"] = (["--server", "127.0.0.1:50051", "--prompt", "a cat", "--output", "{dir}/out"], 2, "error: --server must be an http:// or https:// URL (http://host:port), got '127.0.0.1:50051'."),
        ["server-ftp"] = (["--server", "ftp://127.0.0.1:50051", "--prompt", "a cat", "--output", "{dir}/out"], 2, "error: --server must be an http:// or https:// URL (http://host:port), got 'ftp://127.0.0.1:50051'."),
        ["server-empty"] = (["--server=", "--prompt", "a cat", "--output", "{dir}/out"], 2, "error: --server must be an http:// or https:// URL (http://host:port), got ''."),

        // TLS: --ca-cert only for https://, read before the first call.
        ["ca-cert-empty"] = (Base("--ca-cert="), 2, "error: --ca-cert must not be empty."),
        ["ca-cert-http"] = (Base("--ca-cert", "{dir}/text.txt"), 2, "error: --ca-cert needs an https:// --server."),
        ["ca-cert-missing"] = (["--server", "https://127.0.0.1:1", "--prompt", "a cat", "--output", "{dir}/out", "--ca-cert", "{dir}/missing.pem"], 2, "error: --ca-cert {dir}/missing.pem: Could not find file '{dir}/missing.pem'."),
        ["ca-cert-not-pem"] = (["--server", "https://127.0.0.1:1", "--prompt", "a cat", "--output", "{dir}/out", "--ca-cert", "{dir}/text.txt"], 2, "error: --ca-cert {dir}/text.txt: no PEM certificate (-----BEGIN CERTIFICATE-----)."),

        // Files: .NET's I/O messages, JSON and shapes (LatentsFile, ScheduleFile), before any generation.
        ["schedule-missing"] = (Base("--sampler", "vq-diffusion", "--prior", "purity", "--unmask-schedule", "{dir}/missing.json"), 2, "error: --unmask-schedule {dir}/missing.json: Could not find file '{dir}/missing.json'."),
        ["schedule-missing-folder"] = (Base("--unmask-schedule", "{dir}/nowhere/s.json"), 2, "error: --unmask-schedule {dir}/nowhere/s.json: Could not find a part of the path '{dir}/nowhere/s.json'."),
        ["schedule-is-folder"] = (Base("--unmask-schedule", "{dir}"), 2, "error: --unmask-schedule {dir}: Access to the path '{dir}' is denied."),
        ["schedule-under-a-file"] = (Base("--unmask-schedule", "{dir}/text.txt/s.json"), 2, "error: --unmask-schedule {dir}/text.txt/s.json: Could not find a part of the path '{dir}/text.txt/s.json'."),
        ["schedule-relative"] = (Base("--unmask-schedule", "missing-relative.json"), 2, "error: --unmask-schedule missing-relative.json: Could not find file '{dir}/missing-relative.json'."),
        ["schedule-invalid-json"] = (Base("--unmask-schedule", "{dir}/truncated.json"), 2, "error: --unmask-schedule {dir}/truncated.json: not valid JSON."),
        ["schedule-nan"] = (Base("--unmask-schedule", "{dir}/nan.json"), 2, "error: --unmask-schedule {dir}/nan.json: not valid JSON."),
        ["schedule-bom"] = (Base("--unmask-schedule", "{dir}/bom.json"), 2, "error: --unmask-schedule {dir}/bom.json: "),
        ["schedule-object"] = (Base("--unmask-schedule", "{dir}/object.json"), 2, "error: --unmask-schedule {dir}/object.json: expected a JSON array of integers (one per timestep, index = t)."),
        ["schedule-string"] = (Base("--unmask-schedule", "{dir}/strings.json"), 2, "error: --unmask-schedule {dir}/strings.json: entry 1 is not an integer."),
        ["schedule-fraction"] = (Base("--unmask-schedule", "{dir}/fraction.json"), 2, "error: --unmask-schedule {dir}/fraction.json: entry 0 is not an integer."),
        ["schedule-int32-overflow"] = (Base("--unmask-schedule", "{dir}/int32-overflow.json"), 2, "error: --unmask-schedule {dir}/int32-overflow.json: entry 0 is not an integer."),
        ["latents-invalid-json"] = (Base("--latents", "{dir}/truncated.json"), 2, "error: --latents {dir}/truncated.json: not valid JSON."),
        ["latents-invalid-utf8"] = (Base("--latents", "{dir}/invalid-utf8.json"), 2, "error: --latents {dir}/invalid-utf8.json: row 0 must be an array of 64 integers (H·W)."),
        ["latents-not-array"] = (Base("--latents", "{dir}/number.json"), 2, "error: --latents {dir}/number.json: expected a JSON array of 1 integer arrays."),
        ["latents-rows"] = (Base("--latents", "{dir}/two-rows.json"), 2, "error: --latents {dir}/two-rows.json: has 2 rows, expected 1 (prompts × images per prompt)."),
        ["latents-row-length"] = (Base("--latents", "{dir}/short-row.json"), 2, "error: --latents {dir}/short-row.json: row 0 must be an array of 64 integers (H·W)."),
        ["latents-fraction"] = (Base("--latents", "{dir}/row-fraction.json"), 2, "error: --latents {dir}/row-fraction.json: row 0, column 3 is not an integer."),
        ["latents-int64-overflow"] = (Base("--latents", "{dir}/row-int64-overflow.json"), 2, "error: --latents {dir}/row-int64-overflow.json: row 0, column 0 is not an integer."),
        ["latents-depth-65"] = (Base("--latents", "{dir}/depth-65.json"), 2, "error: --latents {dir}/depth-65.json: not valid JSON."),
        ["latents-depth-64"] = (Base("--latents", "{dir}/depth-64.json"), 2, "error: --latents {dir}/depth-64.json: row 0 must be an array of 64 integers (H·W)."),
        ["latents-int64-max"] = (Base("--latents", "{dir}/row-int64-max.json"), 2, "error: --latents: initial_latents[0] = 2147483647 is not a valid token"),
        ["edit-tokens-missing"] = (Base("--edit-tokens", "{dir}/missing.json"), 2, "error: --edit-tokens {dir}/missing.json: Could not find file '{dir}/missing.json'."),
        ["edit-tokens-row-length"] = (Base("--edit-tokens", "{dir}/short-row.json", "--strength", "0.5"), 2, "error: --edit-tokens {dir}/short-row.json: row 0 must be an array of 64 integers (H·W)."),
        ["edit-image-missing"] = (Base("--edit-image", "{dir}/missing.png", "--strength", "0.5"), 2, "error: --edit-image {dir}/missing.png: Could not find file '{dir}/missing.png'."),
        ["mask-missing"] = (Base("--edit-image", "{dir}/text.txt", "--mask", "{dir}/missing.png"), 2, "error: --mask {dir}/missing.png: Could not find file '{dir}/missing.png'."),

        // vqd's GetModelInfo-based checks (0 is "the server's default" in the protocol) and the server's INVALID_ARGUMENT.
        ["steps-zero"] = (Base("--steps", "0"), 2, "error: --steps: num_inference_steps must be between 1 and 100, got 0."),
        ["steps-plus-zero"] = (Base("--steps=+0"), 2, "error: --steps: num_inference_steps must be between 1 and 100, got 0."),
        ["images-zero"] = (Base("--images-per-prompt", "0"), 2, "error: --images-per-prompt: num_images_per_prompt must be between 1 and "),
        ["steps-negative"] = (Base("--steps", "-1"), 2, "error: --steps: "),
        ["steps-int32-min"] = (Base("--steps", "-2147483648"), 2, "error: --steps: "),
        ["steps-too-many"] = (Base("--steps", "101"), 2, "error: --steps: "),
        ["images-too-many"] = (Base("--images-per-prompt", "9"), 2, "error: --images-per-prompt: "),
        ["guidance-negative"] = (Base("--guidance-scale", "-1"), 2, "error: --guidance-scale: "),
        ["guidance-nan"] = (Base("--guidance-scale", "NaN", "--steps", "1"), 2, "error: --guidance-scale: "),
        ["guidance-infinity"] = (Base("--guidance-scale", " Infinity ", "--steps", "1"), 2, "error: --guidance-scale: "),
        ["guidance-float-overflow"] = (Base("--guidance-scale", "1e39", "--steps", "1"), 2, "error: --guidance-scale: "),
        ["truncation-zero"] = (Base("--truncation-rate", "0"), 2, "error: --truncation-rate: truncation_rate must be in (0, 1]"),
        ["truncation-negative-zero"] = (Base("--truncation-rate", "-0"), 2, "error: --truncation-rate: truncation_rate must be in (0, 1]"),
        ["truncation-nan"] = (Base("--truncation-rate", "nan", "--steps", "1"), 2, "error: --truncation-rate: "),
        ["speed-zero"] = (Base("--sampler", "vq-diffusion", "--speed", "0"), 2, "error: --speed: "),
        ["strength-zero"] = (Base("--edit-tokens", "{dir}/tokens.json", "--strength", "0"), 2, "error: --strength: "),
        ["edit-image-not-an-image"] = (Base("--edit-image", "{dir}/text.txt", "--strength", "0.5"), 2, "error: --edit-image: edit.source_image is not a decodable image"),

        // Other failures exit 1: an unreachable server (the transport's detail differs by client, so the line is compared up to the status).
        ["unreachable"] = (["--server", "{dead}", "--prompt", "a cat", "--steps", "2", "--output", "{dir}/out"], 1, "error: server {dead}: Unavailable"),
        ["unreachable-steps-zero"] = (["--server", "{dead}", "--prompt", "a cat", "--steps", "0", "--output", "{dir}/out"], 1, "error: server {dead}: Unavailable"),
    };

    private readonly RunningServer _server;
    private readonly CompiledTypeScriptExample _typescript;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-parity-" + Guid.NewGuid().ToString("N"));
    private readonly string _dead;

    public ClientParityTests(SharedServerFixture fixture, CompiledTypeScriptExample typescript)
    {
        _server = fixture.Server;
        _typescript = typescript;
        Directory.CreateDirectory(_dir);
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            _dead = $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}";
            listener.Stop();
        }

        string row = string.Join(", ", Enumerable.Range(0, 64).Select(i => i % 64));
        Write("text.txt", "not an image");
        Write("truncated.json", "[1, 2");
        Write("nan.json", "[NaN]");
        File.WriteAllBytes(Path.Combine(_dir, "bom.json"), [0xEF, 0xBB, 0xBF, .. "[1]"u8.ToArray()]);
        File.WriteAllBytes(Path.Combine(_dir, "invalid-utf8.json"), [.. "[[\""u8.ToArray(), 0xFF, .. "\"]]"u8.ToArray()]);
        Write("object.json", """{"t": 1}""");
        Write("strings.json", """[1, "2"]""");
        Write("fraction.json", "[1.0]");
        Write("int32-overflow.json", "[2147483648]");
        Write("number.json", "5");
        Write("two-rows.json", $"[[{row}], [{row}]]");
        Write("short-row.json", "[[0, 1, 2]]");
        Write("tokens.json", $"[[{row}]]");
        Write("row-fraction.json", $"[[0, 1, 2, 3.0{row[row.IndexOf(", 4", StringComparison.Ordinal)..]}]]");
        Write("row-int64-overflow.json", $"[[9223372036854775808{row[row.IndexOf(", 1", StringComparison.Ordinal)..]}]]");
        Write("row-int64-max.json", $"[[9223372036854775807{row[row.IndexOf(", 1", StringComparison.Ordinal)..]}]]");
        Write("depth-65.json", new string('[', 65) + new string(']', 65));
        Write("depth-64.json", new string('[', 64) + new string(']', 64));
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (string name in Cases.Keys)
        {
            data.Add(name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task TheThreeClientsRejectAlike(string name)
    {
        var (flags, expectedCode, expectedLine) = Cases[name];
        string[] args = flags.Select(Expand).ToArray();
        var (vqd, python, typescript) = await RunAllAsync(args);

        Assert.True(vqd.Code == expectedCode, $"vqd exited {vqd.Code}, expected {expectedCode}: {vqd.Err}");
        string vqdLine = SingleLine("vqd", vqd.Err);
        Assert.StartsWith("vqd: ", vqdLine);
        string line = vqdLine["vqd: ".Length..];
        Assert.StartsWith(Expand(expectedLine), line);
        bool byStatus = expectedCode == 1;
        foreach (var (client, result) in new[] { ("python", python), ("typescript", typescript) })
        {
            Assert.True(result.Code == vqd.Code, $"{client} exited {result.Code}, vqd {vqd.Code}; {client}: {result.Err}");
            string clientLine = SingleLine(client, result.Err);
            if (byStatus)
            {
                Assert.StartsWith(Expand(expectedLine), clientLine);
            }
            else
            {
                Assert.Equal(line, clientLine);
            }
        }

        Assert.False(Directory.Exists(Path.Combine(_dir, "out")), "a rejected request writes no output folder");
    }

    [Fact]
    public async Task TheThreeClientsWriteTheSameImageAndSummary()
    {
        var outputs = new[] { "out-vqd", "out-python", "out-typescript" }.Select(o => Path.Combine(_dir, o)).ToArray();
        string[] Flags(string output) => ["--server", _server.Address, "--prompt", "a photo of a cat", "--steps", "2", "--seed", "7", "--quiet", "--output", output];
        var results = await Task.WhenAll(
            RunVqdAsync(Flags(outputs[0])),
            RunPythonAsync(Flags(outputs[1])),
            RunTypeScriptAsync(Flags(outputs[2])));
        for (int i = 0; i < 3; i++)
        {
            Assert.True(results[i].Code == 0, $"{outputs[i]}: {results[i].Err}");
            Assert.Equal(string.Empty, results[i].Err); // --quiet: no progress, no summary
            Assert.Equal(new[] { "000.png" }, Directory.GetFiles(outputs[i]).Select(f => Path.GetFileName(f)).ToArray());
        }

        byte[] png = File.ReadAllBytes(Path.Combine(outputs[0], "000.png"));
        Assert.Equal(png, File.ReadAllBytes(Path.Combine(outputs[1], "000.png")));
        Assert.Equal(png, File.ReadAllBytes(Path.Combine(outputs[2], "000.png")));

        // Without --quiet: the same summary line after the progress bar.
        var loud = await Task.WhenAll(
            RunVqdAsync([.. Flags(outputs[0])[..^3], "--output", outputs[0]]),
            RunPythonAsync([.. Flags(outputs[1])[..^3], "--output", outputs[1]]),
            RunTypeScriptAsync([.. Flags(outputs[2])[..^3], "--output", outputs[2]]));
        for (int i = 0; i < 3; i++)
        {
            Assert.True(loud[i].Code == 0, loud[i].Err);
            string[] lines = loud[i].Err.TrimEnd().Split('\n');
            Assert.Contains(lines, l => l.Contains(" 2/2 t=0 ", StringComparison.Ordinal));
            Assert.Equal($"seed: 7; wrote 1 image(s) to {outputs[i]}", lines[^1]);
        }
    }

    [Fact]
    public async Task HelpExitsZeroEverywhere()
    {
        var results = await RunAllAsync(["--prompt", "--help"]);
        foreach (var r in new[] { results.Vqd, results.Python, results.TypeScript })
        {
            Assert.Equal(0, r.Code);
            Assert.Contains("--server URL", r.Out);
            Assert.Equal(string.Empty, r.Err);
        }
    }

    private static string[] Base(params string[] extra) => ["--server", "{server}", "--prompt", "a cat", "--output", "{dir}/out", .. extra];

    private static string SingleLine(string client, string stderr)
    {
        string[] lines = stderr.TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1 && lines[0].Length > 0, $"{client}: expected one stderr line, got: {stderr}");
        return lines[0];
    }

    private string Expand(string s) => s.Replace("{server}", _server.Address, StringComparison.Ordinal)
        .Replace("{dead}", _dead, StringComparison.Ordinal)
        .Replace("{dir}", _dir, StringComparison.Ordinal);

    private void Write(string name, string text) => File.WriteAllText(Path.Combine(_dir, name), text, new UTF8Encoding(false));

    private async Task<((int Code, string Out, string Err) Vqd, (int Code, string Out, string Err) Python, (int Code, string Out, string Err) TypeScript)> RunAllAsync(string[] args)
    {
        var vqd = RunVqdAsync(args);
        var python = RunPythonAsync(args);
        var typescript = RunTypeScriptAsync(args);
        return (await vqd, await python, await typescript);
    }

    private Task<(int Code, string Out, string Err)> RunVqdAsync(string[] args) => ExampleClients.VqdAsync(args, _dir);

    private Task<(int Code, string Out, string Err)> RunPythonAsync(string[] args) => ExampleClients.PythonAsync(args, _dir);

    private Task<(int Code, string Out, string Err)> RunTypeScriptAsync(string[] args) => ExampleClients.TypeScriptAsync(_typescript, args, _dir);
}
