using System.Diagnostics;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// The real <c>buf</c> CLI from npm (<c>npm ci --prefix tools</c>, done by .ci/run): an external
/// gRPC client (<c>buf curl</c>, through server reflection) and the proto linter.
/// </summary>
public static class BufTool
{
    public static string Path
    {
        get
        {
            string path = System.IO.Path.Combine(Fixtures.RepoRoot, "tools", "node_modules", ".bin", "buf");
            Assert.True(File.Exists(path), $"buf is not installed at {path}: run `npm ci --prefix tools` (bash .ci/run does).");
            return path;
        }
    }

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo(Path)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }
}
