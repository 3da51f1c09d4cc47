using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// Start-up and memory of the server on a model folder (never pass/fail): seconds from process start to SERVING
/// (load + warm-up generation), peak RSS at that point against the weights on disk, and RSS after each of a few
/// requests.
/// </summary>
internal static class StartupBenchmark
{
    public static async Task<int> RunAsync(string repo, string[] args)
    {
        string model = BenchArgs.Value(args, "--model") ?? Path.Combine(repo, "models", "tiny-ithq");
        int requests = int.Parse(BenchArgs.Value(args, "--requests") ?? "3", CultureInfo.InvariantCulture);
        int steps = int.Parse(BenchArgs.Value(args, "--steps") ?? "2", CultureInfo.InvariantCulture);
        long weightBytes = Directory.EnumerateFiles(model, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".bin", StringComparison.Ordinal))
            .Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"model {model}: {weightBytes / 1e9:F2} GB of weights on disk");
        await using var server = await ServerProcess.StartAsync(
            repo, model, line => line.Contains("Model ready", StringComparison.Ordinal), "--Logging:LogLevel:VqDiffusion.Server.Services.ModelHost=Information");
        double peak = ProcessStats.PeakRssMiB(server.Pid);
        Console.WriteLine($"SERVING {server.ReadySeconds:F1} s after process start; peak RSS {peak:F0} MiB = {peak * 1024 * 1024 / weightBytes:F2} × the weights; RSS {ProcessStats.RssMiB(server.Pid):F0} MiB");
        foreach (string line in server.KeptLines)
        {
            Console.WriteLine($"server: {line.Trim()}");
        }

        for (int i = 0; i < requests; i++)
        {
            long faults = ProcessStats.MinorFaults(server.Pid);
            var sw = Stopwatch.StartNew();
            using var call = server.Client.Generate(new GenerateRequest { Prompts = { "a teddy bear playing in the pool" }, NumInferenceSteps = steps, GuidanceScale = 5, Seed = (ulong)i });
            await foreach (var _ in call.ResponseStream.ReadAllAsync())
            {
            }

            Console.WriteLine($"request {i + 1} ({steps} steps): {sw.Elapsed.TotalSeconds:F1} s, {(ProcessStats.MinorFaults(server.Pid) - faults) / 1000.0:F0} thousand page faults; RSS {ProcessStats.RssMiB(server.Pid):F0} MiB, peak {ProcessStats.PeakRssMiB(server.Pid):F0} MiB");
        }

        return 0;
    }
}
