using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;

namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>
/// One server replica: the built VqDiffusion.Server.dll as its own process on a free 127.0.0.1 port with the tiny
/// model, <c>Server:InstanceId</c> set, and its log (stdout and stderr) kept in memory.
/// </summary>
public sealed class ReplicaProcess : IAsyncDisposable
{
    public const string ServiceName = "vqdiffusion.v1.VqDiffusionService";

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _log = new();

    private ReplicaProcess(string instanceId, int port, Process process)
    {
        InstanceId = instanceId;
        Port = port;
        _process = process;
    }

    public string InstanceId { get; }

    public int Port { get; }

    public string Address => $"http://127.0.0.1:{Port}";

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public string Log => string.Join('\n', _log);

    public static ReplicaProcess Start(string instanceId, IEnumerable<string>? settings = null)
    {
        int port = Ports.Free();
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Repo.Root,
        };
        psi.ArgumentList.Add(Repo.ServerDll);
        psi.ArgumentList.Add("--urls");
        psi.ArgumentList.Add($"http://127.0.0.1:{port}");
        psi.ArgumentList.Add($"--Model:Path={Repo.TinyModel}");
        psi.ArgumentList.Add($"--Server:InstanceId={instanceId}");
        psi.ArgumentList.Add("--Logging:LogLevel:Default=Information");
        foreach (string setting in settings ?? [])
        {
            psi.ArgumentList.Add(setting);
        }

        var process = new Process { StartInfo = psi };
        var replica = new ReplicaProcess(instanceId, port, process);
        process.OutputDataReceived += (_, e) => replica.Append(e.Data);
        process.ErrorDataReceived += (_, e) => replica.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return replica;
    }

    /// <summary>Whether a log line contains <paramref name="text"/>.</summary>
    public bool Logged(string text) => _log.Any(l => l.Contains(text, StringComparison.Ordinal));

    /// <summary>Waits (bounded) until a log line contains <paramref name="text"/>; false when it never came.</summary>
    public async Task<bool> WaitForLogAsync(string text, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!Logged(text))
        {
            if (clock.Elapsed > timeout)
            {
                return false;
            }

            await Task.Delay(50).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>Waits until health reports SERVING for the service (what the Kubernetes readiness probe asks).</summary>
    public async Task WaitServingAsync(TimeSpan timeout)
    {
        using var channel = GrpcChannel.ForAddress(Address);
        var health = new Health.HealthClient(channel);
        var clock = Stopwatch.StartNew();
        string last = "no answer";
        while (clock.Elapsed < timeout)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"replica {InstanceId} exited with {_process.ExitCode} before serving:\n{Tail()}");
            }

            try
            {
                HealthCheckResponse response = await health.CheckAsync(new HealthCheckRequest { Service = ServiceName }, deadline: DateTime.UtcNow.AddSeconds(5)).ConfigureAwait(false);
                if (response.Status == HealthCheckResponse.Types.ServingStatus.Serving)
                {
                    return;
                }

                last = response.Status.ToString();
            }
            catch (RpcException ex)
            {
                last = ex.Status.ToString();
            }

            await Task.Delay(200).ConfigureAwait(false);
        }

        throw new TimeoutException($"replica {InstanceId} did not report SERVING within {timeout} ({last}):\n{Tail()}");
    }

    /// <summary>SIGKILL: the process dies at once, its connections are reset.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
    }

    /// <summary>SIGTERM: what Kubernetes sends after preStop; the server drains and exits.</summary>
    public void Terminate() => Signals.Send(_process.Id, Signals.SigTerm);

    /// <summary>Waits (bounded) for the process to exit; false when it is still running.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public string Tail(int chars = 4000)
    {
        string log = Log;
        return log.Length <= chars ? log : log[^chars..];
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        await WaitForExitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        _process.Dispose();
    }

    private void Append(string? line)
    {
        if (line is not null)
        {
            _log.Enqueue(line);
        }
    }
}
