using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>Several replicas (replica-1, replica-2, …) and nginx in front of them; every process is stopped on dispose.</summary>
public sealed class Cluster : IAsyncDisposable
{
    private Cluster(IReadOnlyList<ReplicaProcess> replicas, NginxProcess nginx)
    {
        Replicas = replicas;
        Nginx = nginx;
        NginxChannel = GrpcChannel.ForAddress(nginx.Address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 * 1024 * 1024 });
        ThroughNginx = new VqDiffusionService.VqDiffusionServiceClient(NginxChannel);
    }

    public IReadOnlyList<ReplicaProcess> Replicas { get; }

    public NginxProcess Nginx { get; }

    public GrpcChannel NginxChannel { get; }

    /// <summary>The generated client over nginx (headers and trailers visible).</summary>
    public VqDiffusionService.VqDiffusionServiceClient ThroughNginx { get; }

    public static async Task<Cluster> StartAsync(int replicas, params string[] settings)
    {
        var started = new List<ReplicaProcess>();
        NginxProcess? nginx = null;
        try
        {
            for (int i = 1; i <= replicas; i++)
            {
                started.Add(ReplicaProcess.Start($"replica-{i}", settings));
            }

            await Task.WhenAll(started.Select(r => r.WaitServingAsync(TimeSpan.FromMinutes(3))));
            nginx = await NginxProcess.StartAsync(started.Select(r => r.Port).ToArray());
            return new Cluster(started, nginx);
        }
        catch
        {
            if (nginx is not null)
            {
                await nginx.DisposeAsync();
            }

            foreach (ReplicaProcess r in started)
            {
                await r.DisposeAsync();
            }

            throw;
        }
    }

    public ReplicaProcess Replica(string instanceId) => Replicas.Single(r => r.InstanceId == instanceId);

    /// <summary>The replicas whose log says they completed request <paramref name="requestId"/>.</summary>
    public string[] CompletedBy(string requestId) =>
        Replicas.Where(r => r.Logged($"Request {requestId} completed")).Select(r => r.InstanceId).ToArray();

    /// <summary>Waits (bounded) until some replica logged the completion of <paramref name="requestId"/>.</summary>
    public async Task<string[]> WaitCompletedByAsync(string requestId)
    {
        for (int i = 0; i < 200; i++)
        {
            string[] by = CompletedBy(requestId);
            if (by.Length > 0)
            {
                return by;
            }

            await Task.Delay(50);
        }

        return [];
    }

    /// <summary>Awaits <paramref name="task"/> for at most <paramref name="timeout"/>; on timeout fails with every log tail.</summary>
    public async Task Within(Task task, TimeSpan timeout, string what)
    {
        try
        {
            await task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"{what}: not done within {timeout}\n{Describe()}");
        }
    }

    /// <summary>Diagnostics for a failed assertion: every log tail.</summary>
    public string Describe() =>
        string.Join("\n", Replicas.Select(r => $"--- {r.InstanceId} (port {r.Port}{(r.HasExited ? $", exited {r.ExitCode}" : "")}):\n{r.Tail(2000)}"))
        + $"\n--- nginx access log:\n{Nginx.AccessLog}\n--- nginx error log:\n{Nginx.ErrorLog}";

    public async ValueTask DisposeAsync()
    {
        NginxChannel.Dispose();
        await Nginx.DisposeAsync();
        foreach (ReplicaProcess r in Replicas)
        {
            await r.DisposeAsync();
        }
    }
}
