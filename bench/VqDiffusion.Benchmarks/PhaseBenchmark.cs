using System.Diagnostics;
using System.Globalization;
using VqDiffusion.Model.Pipelines;
using static TorchSharp.torch;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// In-process figures on any diffusers folder: the same request on the main thread and on a new thread
/// (wall time and minor page faults per request), per-phase seconds per step, the transformer's GEMM rate.
/// </summary>
internal static class PhaseBenchmark
{
    public static Task<int> RunAsync(string repo, string[] args)
    {
        string model = Arg(args, "--model") ?? Path.Combine(repo, "models", "tiny-ithq");
        int steps = int.Parse(Arg(args, "--steps") ?? "10", CultureInfo.InvariantCulture);
        int repeats = int.Parse(Arg(args, "--repeats") ?? "3", CultureInfo.InvariantCulture);
        string prompt = Arg(args, "--prompt") ?? "a teddy bear playing in the pool";
        float[] rates = (Arg(args, "--truncation") ?? "1.0,0.86").Split(',').Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray();

        bool tuned = Arg(args, "--malloc") != "default" && VqDiffusion.Model.Runtime.GlibcMalloc.Configure();
        Console.WriteLine($"glibc malloc tuning: {(tuned ? "on (no mmap, no trim)" : "off (glibc defaults)")}");
        var load = Stopwatch.StartNew();
        using var pipeline = VQDiffusionPipeline.FromPretrained(model);
        Console.WriteLine($"model {model}: loaded in {load.Elapsed.TotalSeconds:F2} s; RSS {ProcessStats.RssMiB():F0} MiB; torch threads {get_num_threads()}; {Environment.ProcessorCount} cores");

        GenerationRequest Request(float rate) => new()
        {
            Prompts = [prompt],
            NumInferenceSteps = steps,
            GuidanceScale = 5,
            TruncationRate = rate,
            Seed = 0,
        };

        // Warm-up: one request per rate.
        foreach (float rate in rates)
        {
            pipeline.Generate(Request(rate));
        }

        Console.WriteLine($"{steps} steps, guidance 5, seed 0, prompt \"{prompt}\"; {repeats} repeats, alternating main thread / new thread");
        Console.WriteLine("| truncation | where | wall s (each) | minor faults (k, each) |");
        Console.WriteLine("|---|---|---|---|");
        foreach (float rate in rates)
        {
            var main = new List<(double, long)>();
            var thread = new List<(double, long)>();
            for (int i = 0; i < repeats; i++)
            {
                main.Add(Measure(() => pipeline.Generate(Request(rate))));
                (double, long) r = default;
                var t = new Thread(() => r = Measure(() => pipeline.Generate(Request(rate))));
                t.Start();
                t.Join();
                thread.Add(r);
            }

            Console.WriteLine($"| {rate} | main thread | {Join(main.Select(m => m.Item1))} | {Join(main.Select(m => m.Item2 / 1000.0))} |");
            Console.WriteLine($"| {rate} | new thread | {Join(thread.Select(m => m.Item1))} | {Join(thread.Select(m => m.Item2 / 1000.0))} |");
        }

        Console.WriteLine($"RSS after: {ProcessStats.RssMiB():F0} MiB");
        return Task.FromResult(0);
    }

    private static (double Seconds, long Faults) Measure(Action action)
    {
        long faults = ProcessStats.MinorFaults();
        var sw = Stopwatch.StartNew();
        action();
        return (sw.Elapsed.TotalSeconds, ProcessStats.MinorFaults() - faults);
    }

    private static string Join(IEnumerable<double> values) => string.Join(" / ", values.Select(v => v.ToString("F2", CultureInfo.InvariantCulture)));

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

/// <summary>Process counters read from /proc (Linux).</summary>
internal static class ProcessStats
{
    /// <summary>Minor page faults of this process so far (field 10 of /proc/self/stat).</summary>
    public static long MinorFaults(int? pid = null)
    {
        string stat = File.ReadAllText(pid is int p ? $"/proc/{p}/stat" : "/proc/self/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture); // field 10 overall: minflt
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
