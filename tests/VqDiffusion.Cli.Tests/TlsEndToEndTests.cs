using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests;

/// <summary>
/// TLS and API keys end to end: the server on https://127.0.0.1 with a self-signed certificate made in the test and an
/// API key; vqd, the Python example and the TypeScript example reach it with <c>--api-key</c>/<c>--ca-cert</c> or
/// <c>VQD_API_KEY</c>/<c>VQD_CA_CERT</c>, and write the bytes a local run writes.
/// </summary>
public sealed class TlsEndToEndTests : IClassFixture<TlsServerFixture>, IClassFixture<CompiledTypeScriptExample>, IDisposable
{
    private static readonly string[] Request = ["--prompt", "a photo of a cat", "--steps", "4", "--seed", "11", "--quiet"];

    private readonly TlsServerFixture _tls;
    private readonly CompiledTypeScriptExample _typescript;
    private readonly string _dir = Directory.CreateTempSubdirectory("vqd-tls-clients-").FullName;

    public TlsEndToEndTests(TlsServerFixture tls, CompiledTypeScriptExample typescript)
    {
        _tls = tls;
        _typescript = typescript;
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task TheThreeClientsWithTheKeyAndTheCertificateWriteTheLocalRunsBytes()
    {
        string local = Path.Combine(_dir, "local");
        var (code, _, err) = await CliRunner.RunAsync(["generate", "--model", Fixtures.TinyModel, .. Request, "--output", local]);
        Assert.True(code == 0, err);
        byte[] expected = File.ReadAllBytes(Path.Combine(local, "000.png"));

        string[] Flags(string output) => ["--server", _tls.Address, "--api-key", TlsServerFixture.ApiKey, "--ca-cert", _tls.CertificatePath, .. Request, "--output", output];
        var env = new Dictionary<string, string> { ["VQD_API_KEY"] = TlsServerFixture.ApiKey, ["VQD_CA_CERT"] = _tls.CertificatePath };
        string[] FromEnvironment(string output) => ["--server", _tls.Address, .. Request, "--output", output];
        string[] outputs = [.. new[] { "vqd", "python", "typescript", "vqd-env", "python-env", "typescript-env" }.Select(n => Path.Combine(_dir, n))];
        var results = await Task.WhenAll(
            ExampleClients.VqdAsync(Flags(outputs[0]), _dir),
            ExampleClients.PythonAsync(Flags(outputs[1]), _dir),
            ExampleClients.TypeScriptAsync(_typescript, Flags(outputs[2]), _dir),
            ExampleClients.VqdAsync(FromEnvironment(outputs[3]), _dir, env),
            ExampleClients.PythonAsync(FromEnvironment(outputs[4]), _dir, env),
            ExampleClients.TypeScriptAsync(_typescript, FromEnvironment(outputs[5]), _dir, env));
        for (int i = 0; i < outputs.Length; i++)
        {
            Assert.True(results[i].Code == 0, $"{Path.GetFileName(outputs[i])} exited {results[i].Code}: {results[i].Err}");
            Assert.True(expected.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outputs[i], "000.png"))), $"{Path.GetFileName(outputs[i])}: the PNG differs from the local run's");
        }
    }

    [Theory]
    [InlineData(null, "Unauthenticated: no credentials: send the metadata 'authorization: Bearer <API key or token>'")]
    [InlineData("not-the-key-0123456789abcdef", "Unauthenticated: the API key is not valid")]
    public async Task WithoutTheRightKeyEveryClientReportsUnauthenticated(string? key, string status)
    {
        string[] args = ["--server", _tls.Address, "--ca-cert", _tls.CertificatePath, .. Request, "--output", Path.Combine(_dir, "out"), .. key is null ? Array.Empty<string>() : ["--api-key", key]];
        var results = await Task.WhenAll(ExampleClients.VqdAsync(args, _dir), ExampleClients.PythonAsync(args, _dir), ExampleClients.TypeScriptAsync(_typescript, args, _dir));
        string expected = $"error: server {_tls.Address}: {status}";
        Assert.Equal($"vqd: {expected}", results[0].Err.Trim());
        Assert.Equal(expected, results[1].Err.Trim());
        Assert.Equal(expected, results[2].Err.Trim());
        Assert.All(results, r => Assert.Equal(1, r.Code));
        Assert.False(Directory.Exists(Path.Combine(_dir, "out")));
    }

    [Fact]
    public async Task WithoutTrustingTheCertificateEveryClientFailsBeforeSendingTheKey()
    {
        string[] args = ["--server", _tls.Address, "--api-key", TlsServerFixture.ApiKey, .. Request, "--output", Path.Combine(_dir, "out")];
        var results = await Task.WhenAll(ExampleClients.VqdAsync(args, _dir), ExampleClients.PythonAsync(args, _dir), ExampleClients.TypeScriptAsync(_typescript, args, _dir));
        foreach (var (client, result) in new[] { ("vqd", results[0]), ("python", results[1]), ("typescript", results[2]) })
        {
            Assert.True(result.Code == 1, $"{client} exited {result.Code}: {result.Err}");
            Assert.Contains($"error: server {_tls.Address}: ", result.Err, StringComparison.Ordinal);
            Assert.DoesNotContain(TlsServerFixture.ApiKey, result.Err, StringComparison.Ordinal);
        }
    }
}
