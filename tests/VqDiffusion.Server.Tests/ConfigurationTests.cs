using Grpc.Core;
using Grpc.Health.V1;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>The server process with bad configuration: it stops at once with a clear line, or (switch) stays up NOT_SERVING.</summary>
public sealed class ConfigurationTests
{
    private const string InvalidConfiguration = "VqDiffusion.Server: invalid configuration: ";

    private readonly ITestOutputHelper _output;

    public ConfigurationTests(ITestOutputHelper output) => _output = output;

    [Theory]
    [InlineData("--Generation:MaxQueueLength=-1", "Generation:MaxQueueLength must be at least 1, got -1.")]
    [InlineData("--Model:DType=float64", "Model:DType must be float32, float16 or bfloat16, got 'float64'.")]
    [InlineData("--Model:Device=gpu", "Model:Device must be cpu, cuda or cuda:N, got 'gpu'.")]
    [InlineData("--Generation:MaxPromptCharacters=0", "Generation:MaxPromptCharacters must be at least 1, got 0.")]
    [InlineData("--Generation:MaxQueuedPerCaller=-2", "Generation:MaxQueuedPerCaller must be at least 0 (0 = no per-caller limit), got -2.")]
    [InlineData("--Generation:DrainTimeout=30", "Generation:DrainTimeout must be a duration between 00:00:00 and 01:00:00")]
    [InlineData("--Generation:DrainTimeout=soon", "'Generation:DrainTimeout'")]
    [InlineData("--Generation:MaxActiveRuns=four", "'Generation:MaxActiveRuns'")]
    [InlineData("--Auth:ApiKeys:ci=short-secret", "Auth:ApiKeys:ci: the key named 'ci' is shorter than 16 characters.")]
    [InlineData("--Auth:ApiKeysFile=/nonexistent/vqd-keys", "Auth:ApiKeysFile: cannot read '/nonexistent/vqd-keys': Could not find a part of the path")]
    public async Task ABadValueStopsTheProcessWithOneLineNamingTheKey(string setting, string expected)
    {
        await using var server = ServerProcess.Start(setting);
        int exitCode = await server.WaitForExitAsync(TimeSpan.FromMinutes(1));
        _output.WriteLine(server.Output);

        Assert.Equal(2, exitCode);
        string line = Assert.Single(server.OutputLines, l => l.Contains("invalid configuration", StringComparison.Ordinal));
        Assert.StartsWith(InvalidConfiguration, line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
        Assert.DoesNotContain(server.OutputLines, l => l.Contains("Loading model", StringComparison.Ordinal));
        Assert.DoesNotContain(server.OutputLines, l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal)); // no stack trace
    }

    [Fact]
    public async Task AModelThatCannotLoadStopsTheProcessAndLogsTheReasonOnce()
    {
        string missing = Path.Combine(Path.GetTempPath(), "vqd-no-model-" + Guid.NewGuid().ToString("N"));
        await using var server = ServerProcess.Start($"--Model:Path={missing}");
        int exitCode = await server.WaitForExitAsync(TimeSpan.FromMinutes(1));
        _output.WriteLine(server.Output);

        Assert.Equal(ModelHost.LoadFailureExitCode, exitCode);
        string line = Assert.Single(server.OutputLines, l => l.Contains("Loading the model from", StringComparison.Ordinal));
        Assert.Contains("model_index.json does not exist", line, StringComparison.Ordinal);
        Assert.Contains("exit code 3", line, StringComparison.Ordinal);
        Assert.DoesNotContain(server.OutputLines, l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task WithExitOnLoadFailureOffTheServerStaysUpNotServingAndCallersGetNoInternals()
    {
        string missing = Path.Combine(Path.GetTempPath(), "vqd-no-model-" + Guid.NewGuid().ToString("N"));
        await using var server = ServerProcess.Start($"--Model:Path={missing}", "--Model:ExitOnLoadFailure=false");
        var health = new Health.HealthClient(server.Channel);

        // Wait until the failure is known (UNAVAILABLE with the failure message instead of "still loading").
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        RpcException info;
        while (true)
        {
            Assert.False(server.HasExited, server.Output);
            info = await Assert.ThrowsAsync<RpcException>(() => server.Client.GetModelInfoAsync(new GetModelInfoRequest(), cancellationToken: timeout.Token).ResponseAsync);
            if (info.StatusCode == StatusCode.Unavailable && info.Status.Detail == ModelHost.FailedMessage)
            {
                break;
            }

            await Task.Delay(100, timeout.Token);
        }

        for (int probe = 0; probe < 5; probe++)
        {
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest { Service = "vqdiffusion.v1.VqDiffusionService" })).Status);
        }

        var generate = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a" } })));
        Assert.Equal(StatusCode.Unavailable, generate.StatusCode);
        Assert.Equal(ModelHost.FailedMessage, generate.Status.Detail);
        Assert.DoesNotContain(missing, info.Status.Detail, StringComparison.Ordinal);

        server.Terminate();
        Assert.Equal(0, await server.WaitForExitAsync(TimeSpan.FromMinutes(1)));
        _output.WriteLine(server.Output);

        // The reason is in the log once (with the path, for the operator), not once per probe.
        string line = Assert.Single(server.OutputLines, l => l.Contains("Loading the model from", StringComparison.Ordinal));
        Assert.Contains(missing, line, StringComparison.Ordinal);
        Assert.Contains("stays up, NOT_SERVING", line, StringComparison.Ordinal);
        Assert.DoesNotContain(server.OutputLines, l => l.Contains("Health check", StringComparison.OrdinalIgnoreCase));
    }
}
