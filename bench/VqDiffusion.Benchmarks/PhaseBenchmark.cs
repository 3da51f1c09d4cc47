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
/// table (s/step), the in-process and gRPC runs paired in alternating order; the transformer's GEMM rate against a microbenchmark of the same matrix shapes; minor page
/// faults and RSS per request.
/// </summary>
internal static class PhaseBenchmark
{
    public static int Run(string repo, string[] args)
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

        // The server (if any) starts now and stays warm; then each request runs once in-process on this thread and once
        // over gRPC, alternating which goes first (ABBA), so that the machine's slow drifts fall on both sides of every
        // pair. The gRPC calls block this thread (their I/O runs on the thread pool): every in-process run stays on the
        // process's main thread, where the server runs its model too.
        int mainThread = Environment.CurrentManagedThreadId;
        ServerProcess? server = grpc ? ServerProcess.StartAsync(repo, model).GetAwaiter().GetResult() : null;
        var mainRuns = new Dictionary<float, List<Sample>>();
        var grpcRuns = new Dictionary<float, List<Sample>>();
        var phases = new List<StepPhases>();
        var decode = new List<double>();
        var serverThreadFaults = new List<string>();
        try
        {
            foreach (float rate in rates)
            {
                mainRuns[rate] = [];
                grpcRuns[rate] = [];
                for (int i = 0; i < repeats; i++)
                {
                    bool grpcFirst = i % 2 == 1;
                    if (server is not null && grpcFirst)
                    {
                        grpcRuns[rate].Add(OverGrpc(server, prompt, steps, rate, serverThreadFaults));
                    }

                    if (Environment.CurrentManagedThreadId != mainThread)
                    {
                        throw new InvalidOperationException("the in-process runs left the main thread");
                    }

                    mainRuns[rate].Add(InProcess(pipeline, Request(rate), phases, decode));
                    if (server is not null && !grpcFirst)
                    {
                        grpcRuns[rate].Add(OverGrpc(server, prompt, steps, rate, serverThreadFaults));
                    }
                }
            }
        }
        finally
        {
            if (server is not null)
            {
                server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }

        // The same on a new thread (what the old dedicated worker thread saw).
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

        // Phase table and the GEMM rate of the transformer's own shapes.
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

        Console.WriteLine("Each request in-process (main thread) and over gRPC (warm server), in alternating order; wall seconds, with CPU seconds of the process that ran the model in brackets:");
        Console.WriteLine();
        Console.WriteLine("| truncation | in-process, main thread | over gRPC, warm server | gRPC / in-process, pair by pair | in-process, new thread |");
        Console.WriteLine("|---|---|---|---|---|");
        var wallRatios = new List<double>();
        var cpuRatios = new List<double>();
        foreach (float rate in rates)
        {
            string thread = threadTimes.TryGetValue(rate, out var tt) ? Join(tt) : "–";
            List<Sample> g = grpcRuns[rate];
            List<Sample> m = mainRuns[rate];
            var pairs = g.Zip(m, (a, b) => a.Seconds / b.Seconds).ToList();
            wallRatios.AddRange(pairs);
            cpuRatios.AddRange(g.Zip(m, (a, b) => a.CpuSeconds / b.CpuSeconds));
            string overGrpc = g.Count > 0 ? Describe(g) : "–";
            string ratio = pairs.Count > 0 ? Join(pairs, "F3") : "–";
            Console.WriteLine($"| {rate} | {Describe(m)} | {overGrpc} | {ratio} | {thread} |");
        }

        Console.WriteLine();
        if (wallRatios.Count > 0)
        {
            Console.WriteLine($"gRPC / in-process over {wallRatios.Count} pairs: wall time median {Median(wallRatios):F3} (range {wallRatios.Min():F3}–{wallRatios.Max():F3}); " +
                $"CPU time median {Median(cpuRatios):F3} (range {cpuRatios.Min():F3}–{cpuRatios.Max():F3})");
        }

        List<Sample> allMain = mainRuns.Values.SelectMany(v => v).ToList();
        List<Sample> allGrpc = grpcRuns.Values.SelectMany(v => v).ToList();
        Console.WriteLine($"minor page faults per request (thousands, in run order): main thread {Join(allMain.Select(f => f.Faults / 1000.0), "F0")}" +
            (threadFaults.Count > 0 ? $"; new thread {Join(threadFaults.Select(f => f / 1000.0), "F0")}" : string.Empty) +
            (allGrpc.Count > 0 ? $"; server {Join(allGrpc.Select(f => f.Faults / 1000.0), "F0")}" : string.Empty));
        for (int i = 0; i < serverThreadFaults.Count; i++)
        {
            Console.WriteLine($"server request {i + 1}, faults by thread: {serverThreadFaults[i]}");
        }

        Console.WriteLine($"RSS: this process {rssInProcess:F0} MiB after the in-process runs" +
            (allGrpc.Count > 0 ? $"; server after each request {Join(allGrpc.Select(s => s.RssMiB), "F0")} MiB; server ready (SERVING) {server!.ReadySeconds:F1} s after start" : string.Empty));
        return 0;
    }

    /// <summary>One request's wall and CPU seconds, minor page faults and the RSS after it, of the process that ran the model.</summary>
    private readonly record struct Sample(double Seconds, double CpuSeconds, long Faults, double RssMiB);

    private static Sample InProcess(VQDiffusionPipeline pipeline, GenerationRequest request, List<StepPhases> phases, List<double> decode)
    {
        long faults = ProcessStats.MinorFaults();
        double cpu = ProcessStats.CpuSeconds();
        var sw = Stopwatch.StartNew();
        using (DenoisingRun run = pipeline.Start(request))
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

        return new Sample(sw.Elapsed.TotalSeconds, ProcessStats.CpuSeconds() - cpu, ProcessStats.MinorFaults() - faults, ProcessStats.RssMiB());
    }

    private static Sample OverGrpc(ServerProcess server, string prompt, int steps, float rate, List<string> threadFaults)
    {
        var request = new GenerateRequest { Prompts = { prompt }, NumInferenceSteps = steps, GuidanceScale = 5, TruncationRate = rate, Seed = 0 };
        long before = ProcessStats.MinorFaults(server.Pid);
        double cpu = ProcessStats.CpuSeconds(server.Pid);
        var perThread = ProcessStats.ThreadFaults(server.Pid);
        var sw = Stopwatch.StartNew();
        Task.Run(async () =>
        {
            using var call = server.Client.Generate(request);
            await foreach (var _ in call.ResponseStream.ReadAllAsync())
            {
            }
        }).GetAwaiter().GetResult();
        double seconds = sw.Elapsed.TotalSeconds;
        var after = ProcessStats.ThreadFaults(server.Pid);
        threadFaults.Add(string.Join(", ", after
            .Select(kv => (Name: kv.Key == server.Pid ? "main thread" : kv.Value.Name, Faults: kv.Value.Faults - (perThread.TryGetValue(kv.Key, out var b) ? b.Faults : 0)))
            .Where(t => t.Faults >= 1000)
            .OrderByDescending(t => t.Faults)
            .Take(4)
            .Select(t => $"{t.Name} {t.Faults / 1000.0:F0}k")
            .DefaultIfEmpty("none over 1k")));
        return new Sample(seconds, ProcessStats.CpuSeconds(server.Pid) - cpu, ProcessStats.MinorFaults(server.Pid) - before, ProcessStats.RssMiB(server.Pid));
    }

    private static string Describe(List<Sample> samples) =>
        string.Join(" / ", samples.Select(s => $"{s.Seconds.ToString("F2", CultureInfo.InvariantCulture)} ({s.CpuSeconds.ToString("F1", CultureInfo.InvariantCulture)})"));

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
    public static long MinorFaults(int? pid = null) => StatField(StatFields(pid is int p ? $"/proc/{p}/stat" : "/proc/self/stat"), 10);

    /// <summary>User plus system CPU seconds of a process so far, all its threads (fields 14 and 15 of /proc/PID/stat).</summary>
    public static double CpuSeconds(int? pid = null)
    {
        string[] fields = StatFields(pid is int p ? $"/proc/{p}/stat" : "/proc/self/stat");
        return (StatField(fields, 14) + StatField(fields, 15)) / (double)ClockTicksPerSecond;
    }

    /// <summary>Minor page faults so far of each thread of a process, by thread id, with the thread's name.</summary>
    public static Dictionary<int, (string Name, long Faults)> ThreadFaults(int pid)
    {
        var result = new Dictionary<int, (string, long)>();
        foreach (string dir in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                string name = File.ReadAllText(Path.Combine(dir, "comm")).TrimEnd('\n');
                result[int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture)] = (name, StatField(StatFields(Path.Combine(dir, "stat")), 10));
            }
            catch (IOException)
            {
                // the thread ended between the listing and the read
            }
        }

        return result;
    }

    /// <summary>The fields of a /proc stat file after the command name (which may hold spaces): field 3 onwards.</summary>
    private static string[] StatFields(string path)
    {
        string stat = File.ReadAllText(path);
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    }

    /// <summary>Field <paramref name="number"/> (1-based, as proc(5) numbers them; 3 or more) of <see cref="StatFields"/>.</summary>
    private static long StatField(string[] fields, int number) => long.Parse(fields[number - 3], CultureInfo.InvariantCulture);

    // USER_HZ: 100 on every Linux architecture .NET runs on.
    private const int ClockTicksPerSecond = 100;

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
