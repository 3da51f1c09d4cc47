// Benchmarks (figures, never pass/fail):
//   dotnet run -c Release --project bench/VqDiffusion.Benchmarks -- [command] [options]
//   make-model --preset mid|ithq --out DIR   random-weight pipeline with the real ITHQ configs (ModelGenerator)
//   phases --model DIR                       phase table, GEMM rate, in-process vs gRPC, faults, RSS (PhaseBenchmark)
//   concurrency --model DIR                  short behind long, throughput of concurrent requests (ConcurrencyBenchmark)
//   startup --model DIR                      time to SERVING, peak RSS, RSS per request (StartupBenchmark)
//   micro                                    single tensor operations of a step (MicroBenchmark)
//   stalled [--model DIR] [--streams 4]      server memory with clients that stop reading, bounded vs unbounded buffer (StalledBenchmark)
//   soak [--model DIR] [--minutes 10] [--clients 8]   clients with cancellations and previews: errors, RSS, time to first progress (SoakBenchmark)
//   service (default) [--model DIR] [--requests N] [--steps S]
// The service benchmark starts the Release server as a separate process on a free loopback port, then measures:
//  1. time to first progress event (call start -> first `progress`), median of 20 requests;
//  2. mean time per step through the stream vs. the same pipeline in-process (what `vqd generate` runs);
//  3. server resident memory (VmRSS) after the first request and after N sequential requests.
using System.Diagnostics;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Pipelines;

VqDiffusion.Model.Runtime.MklReproducibility.Configure(); // alignment-independent MKL results, as the server and vqd
string repo = FindRepoRoot();
string command = args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal) ? args[0] : "service";
switch (command)
{
    case "make-model":
        return VqDiffusion.Benchmarks.ModelGenerator.Run(
            repo,
            ArgValue("--out") ?? throw new ArgumentException("make-model needs --out DIR"),
            ArgValue("--preset") ?? "mid",
            IntArg("--layers"),
            IntArg("--heads"),
            IntArg("--head-dim"),
            ulong.Parse(ArgValue("--seed") ?? "0", System.Globalization.CultureInfo.InvariantCulture));
    case "phases":
        return VqDiffusion.Benchmarks.PhaseBenchmark.Run(repo, args);
    case "concurrency":
        return await VqDiffusion.Benchmarks.ConcurrencyBenchmark.RunAsync(repo, args);
    case "startup":
        return await VqDiffusion.Benchmarks.StartupBenchmark.RunAsync(repo, args);
    case "stalled":
        return await VqDiffusion.Benchmarks.StalledBenchmark.RunAsync(repo, args);
    case "soak":
        return await VqDiffusion.Benchmarks.SoakBenchmark.RunAsync(repo, args);
    case "micro":
        return VqDiffusion.Benchmarks.MicroBenchmark.Run(IntArg("--classes") ?? 4096, IntArg("--pixels") ?? 1024);
    case "service":
        break;
    default:
        Console.Error.WriteLine($"unknown command '{command}': service (default), make-model, phases, concurrency, startup, micro, stalled, soak");
        return 2;
}

string model = ArgValue("--model") ?? Path.Combine(repo, "models", "tiny-ithq");
int requests = int.Parse(ArgValue("--requests") ?? "100", System.Globalization.CultureInfo.InvariantCulture);
int steps = int.Parse(ArgValue("--steps") ?? "100", System.Globalization.CultureInfo.InvariantCulture);
await using (var server = await VqDiffusion.Benchmarks.ServerProcess.StartAsync(repo, model))
{
    var client = server.Client;
    var request = new GenerateRequest { Prompts = { "a landscape with a lake" }, NumInferenceSteps = steps, GuidanceScale = 5, TruncationRate = 0.86f, Seed = 4 };

    // Warm-up, then memory after the first measured request.
    await RunAsync(client, request);
    var first = await RunAsync(client, request);
    double rssFirst = VqDiffusion.Benchmarks.ProcessStats.RssMiB(server.Pid);

    var firstProgress = new List<double>();
    var perStep = new List<double>();
    var total = new List<double>();
    for (int i = 1; i < requests; i++)
    {
        var r = await RunAsync(client, request);
        if (i <= 20)
        {
            firstProgress.Add(r.FirstProgressMs);
        }

        perStep.Add(r.StepMs);
        total.Add(r.TotalMs);
    }

    double rssLast = VqDiffusion.Benchmarks.ProcessStats.RssMiB(server.Pid);

    // The same generation in-process, as `vqd generate` runs it.
    using var pipeline = VQDiffusionPipeline.FromPretrained(model);
    var local = new GenerationRequest { Prompts = ["a landscape with a lake"], NumInferenceSteps = steps, GuidanceScale = 5, TruncationRate = 0.86f, Seed = 4 };
    pipeline.Generate(local);
    var localSteps = new List<double>();
    var localTotal = new List<double>();
    for (int i = 0; i < 10; i++)
    {
        var sw = Stopwatch.StartNew();
        double lastStep = 0;
        double firstStepAt = 0;
        pipeline.Generate(local, s =>
        {
            lastStep = sw.Elapsed.TotalMilliseconds;
            if (s.CompletedSteps == 1)
            {
                firstStepAt = lastStep;
            }
        });
        localSteps.Add((lastStep - firstStepAt) / (steps - 1));
        localTotal.Add(sw.Elapsed.TotalMilliseconds);
    }

    Console.WriteLine($"model: {model}; {steps} steps, guidance 5, batch 1; {Environment.ProcessorCount} cores");
    Console.WriteLine($"time to first progress event (median of {firstProgress.Count}): {Median(firstProgress):F1} ms");
    Console.WriteLine($"per step, streamed:   {Median(perStep):F2} ms (median over {perStep.Count} requests; time between first and last progress / (steps-1))");
    Console.WriteLine($"per step, in-process: {Median(localSteps):F2} ms (median of 10 runs, same pipeline as vqd generate)");
    Console.WriteLine($"streaming overhead per step: {Median(perStep) - Median(localSteps):F2} ms");
    Console.WriteLine($"whole request, streamed: {Median(total):F1} ms; in-process: {Median(localTotal):F1} ms");
    Console.WriteLine($"server RSS after request 1: {rssFirst:F1} MiB; after {requests} sequential requests: {rssLast:F1} MiB (delta {rssLast - rssFirst:+0.0;-0.0} MiB)");
    _ = first;
    return 0;
}

static async Task<(double FirstProgressMs, double StepMs, double TotalMs)> RunAsync(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request)
{
    var (first, total, step) = await VqDiffusion.Benchmarks.ConcurrencyBenchmark.TimedAsync(client, request);
    return (first * 1000, step * 1000, total * 1000);
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count == 0 ? double.NaN : sorted[sorted.Count / 2];
}

static string FindRepoRoot()
{
    var dir = new DirectoryInfo(AppContext.BaseDirectory);
    while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VqDiffusion.Grpc.sln")))
    {
        dir = dir.Parent;
    }

    return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
}

static int? IntArg(string name) => VqDiffusion.Benchmarks.BenchArgs.Int(Environment.GetCommandLineArgs(), name);

static string? ArgValue(string name) => VqDiffusion.Benchmarks.BenchArgs.Value(Environment.GetCommandLineArgs(), name);
