using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// The built server (<c>dotnet VqDiffusion.Server.dll</c>) as its own process on a free 127.0.0.1 port, as an
/// operator runs it: its console output is collected, it can be sent SIGTERM, and its exit code is read. Disposing
/// kills it if it is still running.
/// </summary>
public sealed class ServerProcess : IAsyncDisposable
{
    private const int SigTerm = 15;

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();

    private ServerProcess(Process process, int port)
    {
        _process = process;
        Address = $"http://127.0.0.1:{port}";
        Channel = GrpcChannel.ForAddress(Address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 * 1024 * 1024 });
        Client = new VqDiffusionService.VqDiffusionServiceClient(Channel);
    }

    public string Address { get; }

    public GrpcChannel Channel { get; }

    public VqDiffusionService.VqDiffusionServiceClient Client { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Everything the process wrote so far (stdout and stderr), one line each.</summary>
    public IReadOnlyList<string> OutputLines => _output.ToArray();

    public string Output => string.Join('\n', _output);

    /// <summary>The server dll of this build (the test output has a copy with its runtime config).</summary>
    public static string ServerDll
    {
        get
        {
            string local = Path.Combine(AppContext.BaseDirectory, "VqDiffusion.Server.dll");
            if (File.Exists(local) && File.Exists(Path.Combine(AppContext.BaseDirectory, "VqDiffusion.Server.runtimeconfig.json")))
            {
                return local;
            }

            string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name; // bin/<Configuration>/net10.0
            return Path.Combine(Fixtures.RepoRoot, "src", "VqDiffusion.Server", "bin", configuration, "net10.0", "VqDiffusion.Server.dll");
        }
    }

    /// <summary>Starts the server with <c>--Key=Value</c> <paramref name="settings"/> (it does not wait for the model).</summary>
    public static ServerProcess Start(params string[] settings)
    {
        int port = FreePort();
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in new[] { ServerDll, "--urls", $"http://127.0.0.1:{port}" }.Concat(settings))
        {
            psi.ArgumentList.Add(a);
        }

        var process = new Process { StartInfo = psi };
        var server = new ServerProcess(process, port);
        process.OutputDataReceived += (_, e) => server.Collect(e.Data);
        process.ErrorDataReceived += (_, e) => server.Collect(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return server;
    }

    /// <summary>Waits until <c>GetModelInfo</c> answers (the model is loaded); throws if the process exits first.</summary>
    public async Task WaitUntilReadyAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"the server exited with code {_process.ExitCode} before it was ready:\n{Output}");
            }

            try
            {
                await Client.GetModelInfoAsync(new GetModelInfoRequest(), deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: cts.Token);
                return;
            }
            catch (RpcException) when (!cts.IsCancellationRequested)
            {
                await Task.Delay(100, cts.Token);
            }
        }
    }

    /// <summary>Sends SIGTERM, as <c>docker stop</c> and Kubernetes do.</summary>
    public void Terminate()
    {
        if (Kill(_process.Id, SigTerm) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, SIGTERM) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Waits for the process to exit and returns its exit code (the output is complete then).</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the server did not exit within {timeout}:\n{Output}");
        }

        _process.WaitForExit(); // drains the redirected output
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }

    private void Collect(string? line)
    {
        if (line is not null)
        {
            _output.Enqueue(line);
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}
