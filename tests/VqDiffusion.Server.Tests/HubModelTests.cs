using Grpc.Health.V1;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

/// <summary><c>Model:Path</c> as a Hub id, resolved through the Model:Hub* settings against a Hub stand-in.</summary>
public sealed class HubModelTests : IAsyncLifetime
{
    private readonly string _cache = Path.Combine(Path.GetTempPath(), "vqd-server-hub-" + Guid.NewGuid().ToString("N"));
    private FakeHubServer _hub = null!;

    public async Task InitializeAsync() => _hub = await TinyHubRepo.StartAsync();

    public async Task DisposeAsync()
    {
        await _hub.DisposeAsync();
        if (Directory.Exists(_cache))
        {
            Directory.Delete(_cache, recursive: true);
        }
    }

    [Fact]
    public async Task AHubIdIsDownloadedServedAndNamedInModelInfoAndInEveryImage()
    {
        await using RunningServer server = await RunningServer.StartAsync([
            $"--Model:Path={TinyHubRepo.RepoId}", $"--Model:HubCache={_cache}", $"--Model:HubEndpoint={_hub.Endpoint}", "--Model:HubOffline=false"]);
        GetModelInfoResponse info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.Equal(TinyHubRepo.RepoId, info.ModelId);
        Assert.Equal(Path.Combine(_cache, "models--test-org--tiny-ithq", "snapshots", TinyHubRepo.MainCommit), info.ModelPath);
        Assert.False(info.IsBuiltinTestModel);

        var request = new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = 3, Seed = 9 };
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(request));
        byte[] png = events.Single(e => e.Image is not null).Image.Data.ToByteArray();
        string parameters = ImageMetadata.Read(png).Texts[GenerationParameters.ParametersKey];
        Assert.Contains($"Model: {TinyHubRepo.RepoId}, Model revision: main, Model commit: {TinyHubRepo.MainCommit}", parameters);
    }

    [Fact]
    public async Task OfflineWithAnEmptyCacheTheModelFailsToLoadWithAClearReasonAndNoRequest()
    {
        await using RunningServer server = await RunningServer.StartAsync(
            [$"--Model:Path={TinyHubRepo.RepoId}@v2", $"--Model:HubCache={_cache}", $"--Model:HubEndpoint={_hub.Endpoint}", "--Model:HubOffline=true", "--Model:ExitOnLoadFailure=false"],
            waitForModel: false);
        var host = server.Services.GetRequiredService<ModelHost>();
        Exception failure = await Assert.ThrowsAnyAsync<Exception>(() => host.Loaded.WaitAsync(TimeSpan.FromMinutes(1)));
        Assert.Equal(ModelState.Failed, host.State);
        Assert.Contains("revision 'v2' is not in the cache", failure.Message);
        Assert.Empty(_hub.Requests);

        var health = new Health.HealthClient(server.Channel);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
    }
}
