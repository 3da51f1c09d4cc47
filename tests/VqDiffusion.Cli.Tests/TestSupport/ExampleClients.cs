using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests.TestSupport;

/// <summary>The three command-line clients as processes: vqd (the built vqd.dll), the Python example and the compiled TypeScript example.</summary>
public static class ExampleClients
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    public static Task<(int Code, string Out, string Err)> VqdAsync(string[] args, string workingDirectory, IReadOnlyDictionary<string, string>? environment = null) =>
        ChildProcess.RunAsync("dotnet", [VqdDll, "generate", .. args], workingDirectory, Timeout, environment);

    public static Task<(int Code, string Out, string Err)> PythonAsync(string[] args, string workingDirectory, IReadOnlyDictionary<string, string>? environment = null) =>
        ChildProcess.RunAsync("/usr/bin/python3", [Path.Combine(Fixtures.RepoRoot, "clients", "python", "examples", "generate.py"), .. args], workingDirectory, Timeout,
            new Dictionary<string, string>(environment ?? new Dictionary<string, string>()) { ["PYTHONDONTWRITEBYTECODE"] = "1" });

    public static Task<(int Code, string Out, string Err)> TypeScriptAsync(CompiledTypeScriptExample example, string[] args, string workingDirectory, IReadOnlyDictionary<string, string>? environment = null) =>
        ChildProcess.RunAsync("node", [example.Script, .. args], workingDirectory, Timeout, environment);

    /// <summary>vqd as built next to this test assembly's configuration (src/VqDiffusion.Cli/bin/CONFIG/TFM/vqd.dll).</summary>
    public static string VqdDll
    {
        get
        {
            var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
            string path = Path.Combine(Fixtures.RepoRoot, "src", "VqDiffusion.Cli", "bin", tfm.Parent!.Name, tfm.Name, "vqd.dll");
            Assert.True(File.Exists(path), $"vqd is not built at {path}: build the solution first.");
            return path;
        }
    }
}
