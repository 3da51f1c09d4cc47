using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Runtime;
using static TorchSharp.torch;
using GenerationRequest = VqDiffusion.Model.Pipelines.GenerationRequest;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// Figures on any diffusers folder (never pass/fail): the same requests in-process on the main thread of this
/// console process, on a new thread, and over gRPC against the server started as a separate process; the phase
/// table (s/step); the transformer's GEMM rate against a microbenchmark of the same matrix shapes; minor page
/// faults and RSS per request.
/// </summary>
internal static class PhaseBenchmark
{
    public static async Task<int> RunAsync(string repo, string[] args)
    {
        string model = BenchArgs.Value(args, "--model") ?? Path.Combine(repo, "models", "tiny-ithq");
        int steps = int.Parse(BenchArgs.Value(args, "--steps") ?? "10", CultureInfo.InvariantCulture);
        int repeats = int.Parse(BenchArgs.Value(args, "--repeats") ?? "3", CultureInfo.InvariantCulture);
        string prompt = BenchArgs.Value(args, "--prompt") ?? "a teddy bear playing in the pool";
        float[] rates = (BenchArgs.Value(args, "--truncation") ?? "1.0,0.86").Split(',').Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        bool grpc = BenchArgs.Value(args, "--grpc") != "off";
        bool threads = BenchArgs.Value(args, "--new-thread") != "off";

        bool tuned = BenchArgs.Value(args, "--malloc") != "default" && GlibcMalloc.Configure();
        Console.WriteLine($"glibc malloc tuning: {(tuned ? "on (no mmap, no trim)" : "off (glibc defaults)")}; {Environment.ProcessorCount} cores; torch threads {get_num_threads()}");
        var load = Stopwatch.StartNew();
        using var pipeline = VQDiffusionPipeline.FromPretrained(model);
        double loadSeconds = load.Elapsed.TotalSeconds;
        var warm = Stopwatch.StartNew();
        pipeline.WarmUp();
        Console.WriteLine($"model {model}: load {loadSeconds:F2} s, warm-up {warm.Elapsed.TotalSeconds:F2} s, RSS {ProcessStats.RssMiB():F0} MiB");
        Console.WriteLine($"request: \"{prompt}\", {steps} steps, guidance 5, seed 0, truncation {string.Join(" and ", rates)}; {repeats} repeats each");
        Console.WriteLine();

        GenerationRequest Request(float rate) => new() { Prompts = [prompt], NumInferenceSteps = steps, GuidanceScale = 5, TruncationRate = rate, Seed = 0 };

        // 1. In-process on the main thread: the DenoisingRun loop and the decode, with phases.
        var mainTimes = new Dictionary<float, List<double>>();
        var mainFaults = new List<long>();
        var phases = new List<StepPhases>();
        var decode = new List<double>();
        foreach (float rate in rates)
        {
            mainTimes[rate] = [];
            for (int i = 0; i < repeats; i++)
            {
                long faults = ProcessStats.MinorFaults();
                var sw = Stopwatch.StartNew();
                using (DenoisingRun run = pipeline.Start(Request(rate)))
                {
                    run.TrackPredictedX0 = false; // as the server runs a request without previews
                    while (!run.IsDone)
                    {
                        phases.Add(run.Step().Phases);
                    }

                    var d = Stopwatch.StartNew();
                    run.Decode();
                    decode.Add(d.Elapsed.TotalSeconds);
                }

                mainTimes[rate].Add(sw.Elapsed.TotalSeconds);
                mainFaults.Add(ProcessStats.MinorFaults() - faults);
            }
        }

        // 2. The same on a new thread (what a worker thread would see).
        var threadTimes = new Dictionary<float, List<double>>();
        var threadFaults = new List<long>();
        if (threads)
        {
            foreach (float rate in rates)
            {
                threadTimes[rate] = [];
                for (int i = 0; i < repeats; i++)
                {
                    long faults = ProcessStats.MinorFaults();
                    double seconds = 0;
                    var t = new Thread(() =>
                    {
                        var sw = Stopwatch.StartNew();
                        pipeline.Generate(Request(rate));
                        seconds = sw.Elapsed.TotalSeconds;
                    });
                    t.Start();
                    t.Join();
                    threadTimes[rate].Add(seconds);
                    threadFaults.Add(ProcessStats.MinorFaults() - faults);
                }
            }
        }

        double rssInProcess = ProcessStats.RssMiB();

        // 3. Phase table and the GEMM rate of the transformer's own shapes.
        // Medians over the steps: this 2-core machine's speed varies from run to run, and a median is steadier.
        double Typical(Func<StepPhases, TimeSpan> f) => Median(phases.Select(p => f(p).TotalSeconds).ToList());
        double stepMean = Typical(p => p.Total);
        var gemm = GemmBenchmark.Run(pipeline, batch: 2, repeats: 3);
        double transformerRate = gemm.Flops / Typical(p => p.Transformer) / 1e9;
        Console.WriteLine($"| phase (median per step over {phases.Count} warm steps) | s/step | share |");
        Console.WriteLine("|---|---|---|");
        void Row(string name, double s) => Console.WriteLine($"| {name} | {s:F3} | {s / stepMean:P1} |");
        Row("transformer blocks + output projection (batch 2)", Typical(p => p.Transformer));
        Row("float64 log-softmax (+ guidance mix)", Typical(p => p.LogSoftmax));
        Row("guidance renormalisation", Typical(p => p.Guidance));
        Row("truncation + clamp", Typical(p => p.Truncation));
        Row("q_posterior + Gumbel noise + argmax (+ preview x0 argmax)", Typical(p => p.Posterior));
        Row("everything but the transformer", Typical(p => p.NonTransformer));
        Row("whole step", stepMean);
        Console.WriteLine($"| VQ decode (per request) | {Median(decode):F3} s | |");
        Console.WriteLine();
        Console.WriteLine($"transformer: {gemm.Flops / 1e9:F1} GFLOP per forward → {transformerRate:F1} GFLOP/s; GEMM microbenchmark of the same shapes: {gemm.GflopsPerSecond:F1} GFLOP/s " +
            $"({gemm.Seconds:F3} s) → forward at {transformerRate / gemm.GflopsPerSecond:P0} of the GEMM rate");
        Console.WriteLine();

        // 4. Over gRPC, against the published server as its own process.
        var grpcTimes = new Dictionary<float, List<double>>();
        var serverFaults = new List<long>();
        var serverRss = new List<double>();
        double serverReady = double.NaN;
        if (grpc)
        {
            (grpcTimes, serverFaults, serverRss, serverReady) = await OverGrpcAsync(repo, model, rates, repeats, prompt, steps);
        }

        Console.WriteLine("| truncation | in-process, main thread (s) | in-process, new thread (s) | over gRPC, warm server (s) | gRPC / main thread |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (float rate in rates)
        {
            double main = mainTimes[rate].Min();
            string thread = threadTimes.TryGetValue(rate, out var tt) ? Join(tt) : "–";
            string overGrpc = grpcTimes.TryGetValue(rate, out var g) ? Join(g) : "–";
            string ratio = grpcTimes.TryGetValue(rate, out var g2) ? $"{g2.Min() / main:F3}" : "–";
            Console.WriteLine($"| {rate} | {Join(mainTimes[rate])} | {thread} | {overGrpc} | {ratio} |");
        }

        Console.WriteLine();
        Console.WriteLine($"minor page faults per request (thousands): main thread {Join(mainFaults.Select(f => f / 1000.0), "F0")}" +
            (threadFaults.Count > 0 ? $"; new thread {Join(threadFaults.Select(f => f / 1000.0), "F0")}" : string.Empty) +
            (serverFaults.Count > 0 ? $"; server {Join(serverFaults.Select(f => f / 1000.0), "F0")}" : string.Empty));
        Console.WriteLine($"RSS: this process {rssInProcess:F0} MiB after the in-process runs" +
            (serverRss.Count > 0 ? $"; server after each request {Join(serverRss, "F0")} MiB; server ready (SERVING) {serverReady:F1} s after start" : string.Empty));
        return 0;
    }

    private static async Task<(Dictionary<float, List<double>>, List<long>, List<double>, double)> OverGrpcAsync(
        string repo, string model, float[] rates, int repeats, string prompt, int steps)
    {
        var times = new Dictionary<float, List<double>>();
        var faults = new List<long>();
        var rss = new List<double>();
        await using var server = await ServerProcess.StartAsync(repo, model);
        var client = server.Client;
        foreach (float rate in rates)
        {
            times[rate] = [];
            for (int i = 0; i < repeats; i++)
            {
                var request = new GenerateRequest { Prompts = { prompt }, NumInferenceSteps = steps, GuidanceScale = 5, TruncationRate = rate, Seed = 0 };
                long before = ProcessStats.MinorFaults(server.Pid);
                var sw = Stopwatch.StartNew();
                using var call = client.Generate(request);
                await foreach (var _ in call.ResponseStream.ReadAllAsync())
                {
                }

                times[rate].Add(sw.Elapsed.TotalSeconds);
                faults.Add(ProcessStats.MinorFaults(server.Pid) - before);
                rss.Add(ProcessStats.RssMiB(server.Pid));
            }
        }

        return (times, faults, rss, server.ReadySeconds);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN : sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static string Join(IEnumerable<double> values, string format = "F2") =>
        string.Join(" / ", values.Select(v => v.ToString(format, CultureInfo.InvariantCulture)));
}

/// <summary>Process counters read from /proc (Linux).</summary>
internal static class ProcessStats
{
    /// <summary>Minor page faults of a process so far (field 10 of /proc/PID/stat).</summary>
    public static long MinorFaults(int? pid = null)
    {
        string stat = File.ReadAllText(pid is int p ? $"/proc/{p}/stat" : "/proc/self/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture);
    }

    public static double RssMiB(int? pid = null) => StatusKiB("VmRSS:", pid) / 1024.0;

    public static double PeakRssMiB(int? pid = null) => StatusKiB("VmHWM:", pid) / 1024.0;

    private static long StatusKiB(string key, int? pid)
    {
        foreach (string line in File.ReadLines(pid is int p ? $"/proc/{p}/status" : "/proc/self/status"))
        {
            if (line.StartsWith(key, StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            }
        }

        return -1;
    }
}

internal static class Ports
{
    public static int Free()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }
}
