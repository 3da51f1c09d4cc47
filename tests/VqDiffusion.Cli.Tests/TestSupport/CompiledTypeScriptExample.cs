using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests.TestSupport;

/// <summary>
/// The TypeScript client and its example compiled once by the package's own <c>tsc -p tsconfig.json</c> (which also
/// type-checks them) into <c>clients/typescript/dist/parity-*</c>, so that each run of the example costs a plain
/// <c>node</c> start instead of tsx's on-the-fly transform (the same source and compiler options either way).
/// </summary>
public sealed class CompiledTypeScriptExample : IAsyncLifetime
{
    private static readonly string Package = Path.Combine(Fixtures.RepoRoot, "clients", "typescript");
    private readonly string _outDir = Path.Combine(Package, "dist", "parity-" + Guid.NewGuid().ToString("N"));

    /// <summary>The compiled <c>examples/generate.js</c>.</summary>
    public string Script => Path.Combine(_outDir, "examples", "generate.js");

    public async Task InitializeAsync()
    {
        string tsc = Path.Combine(Package, "node_modules", "typescript", "bin", "tsc");
        if (!File.Exists(tsc))
        {
            throw new InvalidOperationException($"TypeScript is not installed at {tsc}: run `npm ci --prefix clients/typescript` (bash .ci/run does).");
        }

        var (code, stdout, stderr) = await ChildProcess.RunAsync(
            "node", [tsc, "-p", Path.Combine(Package, "tsconfig.json"), "--outDir", _outDir, "--declaration", "false", "--sourceMap", "false"], Package, TimeSpan.FromMinutes(5));
        if (code != 0 || !File.Exists(Script))
        {
            throw new InvalidOperationException($"tsc failed (exit {code}):\n{stdout}{stderr}");
        }
    }

    public Task DisposeAsync()
    {
        if (Directory.Exists(_outDir))
        {
            Directory.Delete(_outDir, recursive: true);
        }

        return Task.CompletedTask;
    }
}
