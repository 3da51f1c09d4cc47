using VqDiffusion.Deploy.Tests.TestSupport;

namespace VqDiffusion.Deploy.Tests;

public sealed class NginxConfigTests
{
    [Fact]
    public void TheShippedConfigurationPassesNginxsOwnCheck()
    {
        string prefix = NginxProcess.CreatePrefix(File.ReadAllText(Repo.NginxConf));
        try
        {
            (int exitCode, string output) = NginxProcess.RunOnce(prefix, "-t");
            Assert.True(exitCode == 0, output);
            Assert.Contains("test is successful", output, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(prefix, recursive: true);
        }
    }

    [Fact]
    public void OnlyThePortsChangeForTheTests()
    {
        string shipped = File.ReadAllText(Repo.NginxConf);
        string configured = NginxProcess.Configure(18080, [18081, 18082]);
        Assert.Contains("listen 127.0.0.1:18080 http2;", configured, StringComparison.Ordinal);
        Assert.Contains("server 127.0.0.1:18081 max_fails=1 fail_timeout=5s;", configured, StringComparison.Ordinal);
        Assert.Contains("server 127.0.0.1:18082 max_fails=1 fail_timeout=5s;", configured, StringComparison.Ordinal);
        Assert.DoesNotMatch(@"server 127\.0\.0\.1:5006[0-9]", configured);
        string[] Directives(string conf) => conf.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#') && !l.Contains("127.0.0.1", StringComparison.Ordinal)).ToArray();
        Assert.Equal(Directives(shipped), Directives(configured));
        Assert.Contains("grpc_pass grpc://vqdiffusion_replicas;", shipped, StringComparison.Ordinal);
        Assert.Contains("grpc_next_upstream error timeout invalid_header http_502 http_503 non_idempotent;", shipped, StringComparison.Ordinal);
    }
}
