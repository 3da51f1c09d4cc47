namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>Paths in the repository and the programs the deployment tests run.</summary>
public static class Repo
{
    private static readonly Lazy<string> RootDir = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VqDiffusion.Grpc.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("repository root (VqDiffusion.Grpc.sln) not found above " + AppContext.BaseDirectory);
    });

    public static string Root => RootDir.Value;

    public static string TinyModel => Path.Combine(Root, "models", "tiny-ithq");

    public static string KubernetesDir => Path.Combine(Root, "deploy", "kubernetes");

    public static string NginxConf => Path.Combine(Root, "deploy", "nginx", "nginx.conf");

    /// <summary>The server built in this test run's configuration (bin/Debug or bin/Release).</summary>
    public static string ServerDll
    {
        get
        {
            // AppContext.BaseDirectory = tests/VqDiffusion.Deploy.Tests/bin/<Configuration>/<tfm>/
            var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
            string configuration = output.Parent?.Name ?? "Debug";
            string dll = Path.Combine(Root, "src", "VqDiffusion.Server", "bin", configuration, output.Name, "VqDiffusion.Server.dll");
            return File.Exists(dll)
                ? dll
                : throw new FileNotFoundException($"{dll} is missing: build the solution (dotnet build VqDiffusion.Grpc.sln) before these tests");
        }
    }

    /// <summary>nginx from PATH or /usr/sbin (Debian package nginx; .ci/run installs it).</summary>
    public static string Nginx
    {
        get
        {
            IEnumerable<string> dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                .Concat(["/usr/sbin", "/usr/local/sbin"]);
            return dirs.Select(d => Path.Combine(d, "nginx")).FirstOrDefault(File.Exists)
                ?? throw new FileNotFoundException("nginx is not installed: apt-get install nginx (the Debian package; .ci/run installs it)");
        }
    }
}
