using VqDiffusion.Cli.Tests.TestSupport;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests;

/// <summary>vqd (local and --server), the server and GetModelInfo apply the same limits: GenerationLimits.Default.</summary>
public sealed class LimitsAgreeTests : IClassFixture<SharedServerFixture>, IDisposable
{
    private readonly RunningServer _server;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-cli-limits-" + Guid.NewGuid().ToString("N"));

    public LimitsAgreeTests(SharedServerFixture fixture)
    {
        _server = fixture.Server;
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task LocalAndRemoteRejectTheSameTooLongPromptWithTheSameLine()
    {
        GetModelInfoResponse info = await _server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        int max = GenerationLimits.Default.MaxPromptCharacters;
        Assert.Equal(max, info.Limits.MaxPromptCharacters);
        Assert.Equal(GenerationLimits.Default.MaxPrompts, info.Limits.MaxPrompts);
        Assert.Equal(GenerationLimits.Default.MaxImagesPerPrompt, info.Limits.MaxImagesPerPrompt);
        Assert.Equal(GenerationLimits.Default.MaxBatchSize, info.Limits.MaxBatchSize);

        // Emoji: one character each, two UTF-16 units.
        string tooLong = string.Concat(Enumerable.Repeat("🐈", max + 1));
        var (localCode, _, localErr) = await CliRunner.RunAsync("generate", "--model", Fixtures.TinyModel, "--prompt", tooLong, "--steps", "1", "--output", Path.Combine(_dir, "local"));
        var (remoteCode, _, remoteErr) = await CliRunner.RunAsync("generate", "--server", _server.Address, "--prompt", tooLong, "--steps", "1", "--output", Path.Combine(_dir, "remote"));
        Assert.Equal((2, 2), (localCode, remoteCode));
        Assert.Contains($"has {max + 1} characters; at most {max} are allowed.", localErr, StringComparison.Ordinal);
        Assert.Equal(localErr.Trim(), remoteErr.Trim());

        // Exactly the limit passes in both modes.
        string atLimit = string.Concat(Enumerable.Repeat("🐈", max));
        var (okLocal, _, okLocalErr) = await CliRunner.RunAsync("generate", "--model", Fixtures.TinyModel, "--prompt", atLimit, "--steps", "1", "--quiet", "--output", Path.Combine(_dir, "ok-local"));
        Assert.True(okLocal == 0, okLocalErr);
        var (okRemote, _, okRemoteErr) = await CliRunner.RunAsync("generate", "--server", _server.Address, "--prompt", atLimit, "--steps", "1", "--quiet", "--output", Path.Combine(_dir, "ok-remote"));
        Assert.True(okRemote == 0, okRemoteErr);
    }
}
