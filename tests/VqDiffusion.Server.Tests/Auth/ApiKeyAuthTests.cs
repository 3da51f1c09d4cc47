using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1Alpha;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.Auth;

/// <summary>API keys (<c>Auth:ApiKeys</c>, <c>Auth:ApiKeysFile</c>) on the real server over loopback.</summary>
public sealed class ApiKeyAuthTests
{
    private const string Key = "k3y-for-the-ci-0123456789";
    private const string OtherKey = "another-key-abcdefghijklmnop";
    private const string WrongKey = "wrong-key-zyxwvutsrqponmlk";
    private const string Invalid = "Unauthenticated: the API key is not valid";

    [Fact]
    public async Task CallsWithoutAValidKeyGetUnauthenticatedAndTheKeyIsNeverLogged()
    {
        var logs = new CapturedLogs();
        await using var server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", $"--Auth:ApiKeys:ci={Key}", "--Logging:LogLevel:Default=Trace"],
            configure: s => s.AddSingleton<ILoggerProvider>(logs));

        RpcException none = await Assert.ThrowsAsync<RpcException>(() => server.Client.GetModelInfoAsync(new GetModelInfoRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unauthenticated, none.StatusCode);
        Assert.Equal("no credentials: send the metadata 'authorization: Bearer <API key or token>'", none.Status.Detail);

        RpcException wrong = await Assert.ThrowsAsync<RpcException>(() => server.Client.GetModelInfoAsync(new GetModelInfoRequest(), Bearer(WrongKey)).ResponseAsync);
        Assert.Equal(StatusCode.Unauthenticated, wrong.StatusCode);
        Assert.Equal("the API key is not valid", wrong.Status.Detail);

        RpcException basic = await Assert.ThrowsAsync<RpcException>(() => server.Client.GetModelInfoAsync(new GetModelInfoRequest(), new Metadata { { "authorization", "Basic " + Key } }).ResponseAsync);
        Assert.Equal(StatusCode.Unauthenticated, basic.StatusCode);
        Assert.Equal("the authorization metadata must be 'Bearer <API key or token>'", basic.Status.Detail);

        // Generate is refused before its request is looked at: nothing is queued.
        var stream = server.Client.Generate(Request(), Bearer(WrongKey));
        RpcException generate = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.Unauthenticated, generate.StatusCode);

        // The right key: both methods work.
        GetModelInfoResponse info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest(), Bearer(Key));
        Assert.Equal(8, info.LatentHeight);
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(Request(), Bearer(Key)));
        Assert.Single(events, e => e.EventCase == GenerateResponse.EventOneofCase.Image);

        // Health and reflection stay open.
        var health = await new Health.HealthClient(server.Channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        Assert.Contains("vqdiffusion.v1.VqDiffusionService", await ListServicesAsync(server.Channel));

        // The rejections are logged with their reason; neither key appears anywhere in the log.
        Assert.Contains(logs.Entries, e => e.Message.Contains("with UNAUTHENTICATED: the API key is not valid", StringComparison.Ordinal));
        Assert.Contains(logs.Entries, e => e.Message.Contains("Authentication on:", StringComparison.Ordinal) && e.Message.Contains("API keys (ci)", StringComparison.Ordinal));
        foreach (CapturedLogs.Entry entry in logs.Entries)
        {
            Assert.DoesNotContain(Key, entry.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(WrongKey, entry.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(Key, entry.Exception?.ToString() ?? string.Empty, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task ReflectionNeedsAKeyWhenConfigured()
    {
        await using var server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", $"--Auth:ApiKeys:ci={Key}", "--Auth:RequireForReflection=true"]);
        RpcException refused = await Assert.ThrowsAsync<RpcException>(() => ListServicesAsync(server.Channel));
        Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
        Assert.Contains("vqdiffusion.v1.VqDiffusionService", await ListServicesAsync(server.Channel, Bearer(Key)));
        var health = await new Health.HealthClient(server.Channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
    }

    [Fact]
    public async Task AuthIsOffWithoutKeysOrJwt()
    {
        await using var server = await RunningServer.StartAsync([$"--Model:Path={Fixtures.TinyModel}"]);
        GetModelInfoResponse info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest());
        Assert.Equal(8, info.LatentHeight);

        // A credential sent to a server without auth is ignored, not an error.
        info = await server.Client.GetModelInfoAsync(new GetModelInfoRequest(), Bearer(WrongKey));
        Assert.Equal(8, info.LatentHeight);
    }

    [Fact]
    public async Task KeysFromAFileAreReadAgainWhenItChanges()
    {
        string dir = Directory.CreateTempSubdirectory("vqd-keys-").FullName;
        try
        {
            string file = Path.Combine(dir, "keys");
            await File.WriteAllTextAsync(file, $"# team keys\nalpha:{Key}\n\n");
            var logs = new CapturedLogs();
            await using var server = await RunningServer.StartAsync(
                [$"--Model:Path={Fixtures.TinyModel}", $"--Auth:ApiKeysFile={file}", $"--Auth:ApiKeys:inline={OtherKey}"],
                configure: s => s.AddSingleton<ILoggerProvider>(logs));
            Assert.Equal(8, (await server.Client.GetModelInfoAsync(new GetModelInfoRequest(), Bearer(Key))).LatentHeight);
            Assert.Equal(8, (await server.Client.GetModelInfoAsync(new GetModelInfoRequest(), Bearer(OtherKey))).LatentHeight);

            // Rotation: alpha's key is replaced by beta's; within the recheck interval the new file is in force.
            await File.WriteAllTextAsync(file, $"beta:{WrongKey}\n");
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddSeconds(5));
            Assert.True(await EventuallyAsync(async () => await OutcomeAsync(server, Key) == Invalid), "the old key is still accepted");
            Assert.Equal("OK", await OutcomeAsync(server, WrongKey));
            Assert.Equal("OK", await OutcomeAsync(server, OtherKey));

            // A broken file keeps the keys read before it, with a warning naming the line.
            await File.WriteAllTextAsync(file, "gamma-without-a-key\n");
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddSeconds(10));
            // (The file is looked at when a call is authenticated.)
            Assert.True(await EventuallyAsync(async () =>
                await OutcomeAsync(server, WrongKey) == "OK"
                && logs.Entries.Any(e => e.Level == LogLevel.Warning && e.Message.Contains("line 1: expected 'name:key'", StringComparison.Ordinal))));
            Assert.Equal("OK", await OutcomeAsync(server, WrongKey));
            Assert.Equal(Invalid, await OutcomeAsync(server, Key));
            Assert.All(logs.Entries, e => Assert.DoesNotContain(WrongKey, e.Message, StringComparison.Ordinal));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    internal static Metadata Bearer(string credential) => new() { { "authorization", "Bearer " + credential } };

    internal static GenerateRequest Request() => new() { Prompts = { "a cat" }, NumInferenceSteps = 2, Seed = 1 };

    internal static async Task<List<string>> ListServicesAsync(global::Grpc.Net.Client.GrpcChannel channel, Metadata? headers = null)
    {
        var reflection = new ServerReflection.ServerReflectionClient(channel);
        using var call = reflection.ServerReflectionInfo(headers);
        await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = string.Empty });
        await call.RequestStream.CompleteAsync();
        var names = new List<string>();
        while (await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            names.AddRange(call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name));
        }

        return names;
    }

    /// <summary>"OK" when GetModelInfo with <paramref name="credential"/> succeeds, else its status and detail.</summary>
    internal static async Task<string> OutcomeAsync(RunningServer server, string credential)
    {
        try
        {
            await server.Client.GetModelInfoAsync(new GetModelInfoRequest(), Bearer(credential));
            return "OK";
        }
        catch (RpcException ex)
        {
            return $"{ex.StatusCode}: {ex.Status.Detail}";
        }
    }

    private static async Task<bool> EventuallyAsync(Func<Task<bool>> condition)
    {
        for (int i = 0; i < 100; i++)
        {
            if (await condition())
            {
                return true;
            }

            await Task.Delay(100);
        }

        return false;
    }
}
