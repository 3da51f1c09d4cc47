using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>
/// nginx with deploy/nginx/nginx.conf, changed only in its ports (the listen address and the upstream's server
/// lines), without root: prefix, pid, logs and temporary files in a directory of its own, in the foreground.
/// </summary>
public sealed partial class NginxProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    private NginxProcess(Process process, string prefix, int port)
    {
        _process = process;
        Prefix = prefix;
        Port = port;
    }

    public string Prefix { get; }

    public int Port { get; }

    public string Address => $"http://127.0.0.1:{Port}";

    /// <summary>nginx's access log (one line per call: status, grpc-status, upstream, vqd-instance-id).</summary>
    public string AccessLog
    {
        get
        {
            string path = Path.Combine(Prefix, "logs", "access.log");
            return File.Exists(path) ? File.ReadAllText(path) : "";
        }
    }

    public string ErrorLog
    {
        get
        {
            string path = Path.Combine(Prefix, "logs", "error.log");
            return File.Exists(path) ? File.ReadAllText(path) : "";
        }
    }

    /// <summary>The shipped configuration with its listen port and upstream servers replaced.</summary>
    public static string Configure(int listenPort, IReadOnlyList<int> upstreamPorts)
    {
        string conf = File.ReadAllText(Repo.NginxConf);
        MatchCollection servers = ServerLine().Matches(conf);
        if (servers.Count != 3)
        {
            throw new InvalidOperationException($"deploy/nginx/nginx.conf: expected the 3 upstream server lines 127.0.0.1:5006x, found {servers.Count}");
        }

        string template = servers[0].Value;
        string replacement = string.Join('\n', upstreamPorts.Select(p => ServerPort().Replace(template, $"127.0.0.1:{p}")));
        conf = conf[..servers[0].Index] + replacement + conf[(servers[^1].Index + servers[^1].Length)..];
        const string listen = "listen 127.0.0.1:8080 http2;";
        if (conf.Split(listen).Length != 2)
        {
            throw new InvalidOperationException($"deploy/nginx/nginx.conf: expected one '{listen}'");
        }

        return conf.Replace(listen, $"listen 127.0.0.1:{listenPort} http2;", StringComparison.Ordinal);
    }

    /// <summary>A fresh prefix directory (logs/, temp/) with <paramref name="conf"/> as nginx.conf.</summary>
    public static string CreatePrefix(string conf)
    {
        string prefix = Directory.CreateTempSubdirectory("vqd-nginx-").FullName;
        // As root nginx runs its workers as nobody: they must be able to enter the prefix.
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(prefix, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }

        Directory.CreateDirectory(Path.Combine(prefix, "logs"));
        Directory.CreateDirectory(Path.Combine(prefix, "temp"));
        File.WriteAllText(Path.Combine(prefix, "nginx.conf"), conf);
        return prefix;
    }

    /// <summary>Runs nginx once with <paramref name="arguments"/> after the prefix and config (e.g. -t); exit code and output.</summary>
    public static (int ExitCode, string Output) RunOnce(string prefix, params string[] arguments)
    {
        var psi = NginxStartInfo(prefix);
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(30_000))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("nginx " + string.Join(' ', arguments) + " did not finish in 30 s");
        }

        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    public static async Task<NginxProcess> StartAsync(IReadOnlyList<int> upstreamPorts)
    {
        int port = Ports.Free();
        string prefix = CreatePrefix(Configure(port, upstreamPorts));
        ProcessStartInfo psi = NginxStartInfo(prefix);
        psi.ArgumentList.Add("-g");
        psi.ArgumentList.Add("daemon off;");
        var process = new Process { StartInfo = psi };
        var nginx = new NginxProcess(process, prefix, port);
        process.OutputDataReceived += (_, e) => nginx.Append(e.Data);
        process.ErrorDataReceived += (_, e) => nginx.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var clock = Stopwatch.StartNew();
        while (!await Ports.AcceptsAsync(port).ConfigureAwait(false))
        {
            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                string why = process.HasExited ? $"exited with {process.ExitCode}" : "is not listening after 30 s";
                await nginx.DisposeAsync().ConfigureAwait(false);
                throw new InvalidOperationException($"nginx {why}:\n{nginx.Stderr}\n{nginx.ErrorLog}");
            }

            await Task.Delay(50).ConfigureAwait(false);
        }

        return nginx;
    }

    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            // SIGTERM: nginx's fast shutdown stops the workers too; then make sure.
            try
            {
                Signals.Send(_process.Id, Signals.SigTerm);
            }
            catch (InvalidOperationException)
            {
                // already gone
            }

            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync().ConfigureAwait(false);
            }
        }

        _process.Dispose();
        try
        {
            Directory.Delete(Prefix, recursive: true);
        }
        catch (IOException)
        {
            // a worker may still hold a log open for a moment; the directory is in the temp folder
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static ProcessStartInfo NginxStartInfo(string prefix)
    {
        var psi = new ProcessStartInfo(Repo.Nginx)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-p");
        psi.ArgumentList.Add(prefix + Path.DirectorySeparatorChar);
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(Path.Combine(prefix, "nginx.conf"));
        psi.ArgumentList.Add("-e");
        psi.ArgumentList.Add("stderr");
        return psi;
    }

    private void Append(string? line)
    {
        if (line is not null)
        {
            lock (_stderr)
            {
                _stderr.AppendLine(line);
            }
        }
    }

    [GeneratedRegex(@"^[ \t]*server 127\.0\.0\.1:5006[0-9] [^\n]*;", RegexOptions.Multiline)]
    private static partial Regex ServerLine();

    [GeneratedRegex(@"127\.0\.0\.1:5006[0-9]")]
    private static partial Regex ServerPort();
}
