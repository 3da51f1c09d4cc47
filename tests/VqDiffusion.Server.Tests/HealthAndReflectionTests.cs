using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1Alpha;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

public sealed class HealthAndReflectionTests
{
    private const string ServiceName = "vqdiffusion.v1.VqDiffusionService";

    private sealed class ManualGate : IModelLoadGate
    {
        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task WaitAsync(CancellationToken cancellationToken) => Open.Task.WaitAsync(cancellationToken);
    }

    [Fact]
    public async Task HealthIsNotServingUntilTheModelIsLoaded()
    {
        var gate = new ManualGate();
        await using var server = await RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}"], gate, waitForModel: false);
        var health = new Health.HealthClient(server.Channel);

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest { Service = ServiceName })).Status);
        var unavailable = await Assert.ThrowsAsync<RpcException>(() => server.Client.GetModelInfoAsync(new GetModelInfoRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, unavailable.StatusCode);
        Assert.Contains("still loading", unavailable.Status.Detail);

        using var watch = health.Watch(new HealthCheckRequest { Service = ServiceName });
        Assert.True(await watch.ResponseStream.MoveNext());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, watch.ResponseStream.Current.Status);

        gate.Open.SetResult();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (true)
        {
            var status = (await health.CheckAsync(new HealthCheckRequest { Service = ServiceName }, cancellationToken: timeout.Token)).Status;
            if (status == HealthCheckResponse.Types.ServingStatus.Serving)
            {
                break;
            }

            await Task.Delay(50, timeout.Token);
        }

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(8, (await server.Client.GetModelInfoAsync(new GetModelInfoRequest())).LatentHeight);
    }

    [Fact]
    public async Task AModelThatFailsToLoadStaysNotServingWithAClearStatusWhenAskedTo()
    {
        string missing = Path.Combine(Path.GetTempPath(), "vqd-no-model-" + Guid.NewGuid().ToString("N"));
        await using var server = await RunningServer.StartAsync([$"--Model:Path={missing}", "--Model:ExitOnLoadFailure=false"], waitForModel: false);
        var health = new Health.HealthClient(server.Channel);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        RpcException ex;
        while (true)
        {
            ex = await Assert.ThrowsAsync<RpcException>(() => server.Client.GetModelInfoAsync(new GetModelInfoRequest(), cancellationToken: timeout.Token).ResponseAsync);
            if (ex.Status.Detail.Contains("failed to load", StringComparison.Ordinal))
            {
                break;
            }

            await Task.Delay(50, timeout.Token);
        }

        // The reason (with the path) is in the server log; callers get the same short message.
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Equal(ModelHost.FailedMessage, ex.Status.Detail);
        Assert.Equal(ModelState.Failed, server.Services.GetRequiredService<ModelHost>().State);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        var generate = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a" } })));
        Assert.Equal(StatusCode.Unavailable, generate.StatusCode);
        Assert.Equal(ModelHost.FailedMessage, generate.Status.Detail);
    }

    [Fact]
    public async Task WithoutAConfiguredModelTheBuiltinTestPipelineIsServed()
    {
        await using var server = await RunningServer.StartAsync();
        GetModelInfoResponse info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.True(info.IsBuiltinTestModel);
        Assert.Equal(Path.Combine(AppContext.BaseDirectory, "models", "tiny-ithq"), info.ModelPath);
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = 2 }));
        Assert.Equal(GenerateResponse.EventOneofCase.Completed, events[^1].EventCase);
    }

    [Fact]
    public async Task ReflectionListsTheServices()
    {
        await using var server = await RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}"]);
        var reflection = new ServerReflection.ServerReflectionClient(server.Channel);
        using var call = reflection.ServerReflectionInfo();
        await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = string.Empty });
        await call.RequestStream.CompleteAsync();
        Assert.True(await call.ResponseStream.MoveNext());
        var services = call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToList();
        Assert.Contains(ServiceName, services);
        Assert.Contains("grpc.health.v1.Health", services);
    }
}
