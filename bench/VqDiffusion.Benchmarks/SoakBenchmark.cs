using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// Soak (figures, not in CI): N clients, each on its own connection, send requests back to back for M minutes
/// against the Release server as its own process: random step counts and batch sizes, a third with previews, a
/// quarter cancelled after a random number of progress events, some with a deadline too short to finish. Reports
/// errors (any status other than the client's own cancellation or deadline, or a stream without its completed event;
/// expected 0), server RSS over time (expected flat), and p50/p99 time to first progress.
///   soak [--model DIR] [--minutes 10] [--clients 8] [--max-steps 20] [--seed 1]
/// </summary>
internal static class SoakBenchmark
{
    public static async Task<int> RunAsync(string repo, string[] args)
    {
        string model = BenchArgs.Value(args, "--model") ?? Path.Combine(repo, "models", "tiny-ithq");
        double minutes = double.Parse(BenchArgs.Value(args, "--minutes") ?? "10", CultureInfo.InvariantCulture);
        int clients = BenchArgs.Int(args, "--clients") ?? 8;
        int maxSteps = BenchArgs.Int(args, "--max-steps") ?? 20;
        int seed = BenchArgs.Int(args, "--seed") ?? 1;
        Console.WriteLine($"soak: model {model}; {clients} clients for {minutes:F1} min; 1..{maxSteps} steps, 1..4 images, previews on a third, a quarter cancelled, a tenth with a short deadline; {Environment.ProcessorCount} cores");

        await using var server = await ServerProcess.StartAsync(repo, model, line => line.StartsWith("fail", StringComparison.Ordinal) || line.StartsWith("crit", StringComparison.Ordinal), "--Logging:LogLevel:Default=Warning");
        var stats = new Stats();
        var sampler = new RssSampler(server.Pid, TimeSpan.FromSeconds(5));
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(minutes));
        var clock = Stopwatch.StartNew();
        var loops = Enumerable.Range(0, clients).Select(c => Task.Run(() => ClientLoopAsync(server.Address, new Random(seed * 1000 + c), maxSteps, stats, stop.Token))).ToList();
        var minute = Stopwatch.StartNew();
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(60), stop.Token);
            }
            catch (OperationCanceledException)
            {
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {clock.Elapsed.TotalMinutes:F1} min: {stats.Completed} completed, {stats.Cancelled} cancelled, {stats.DeadlineExceeded} deadline, {stats.Errors.Count} errors; RSS {ProcessStats.RssMiB(server.Pid):F0} MiB"));
        }

        await Task.WhenAll(loops);
        await sampler.StopAsync();
        double total = clock.Elapsed.TotalMinutes;

        var ttfp = stats.FirstProgressMs.ToArray().Order().ToArray();
        var samples = sampler.Samples;
        var afterWarmUp = samples.Where(s => s.Seconds >= 60).Select(s => s.MiB).ToList();
        Console.WriteLine();
        Console.WriteLine($"requests: {stats.Completed + stats.Cancelled + stats.DeadlineExceeded + stats.Errors.Count} in {total:F1} min; completed {stats.Completed} ({stats.Images} images), cancelled by the client {stats.Cancelled}, deadline exceeded {stats.DeadlineExceeded}");
        Console.WriteLine($"errors: {stats.Errors.Count}{(stats.Errors.IsEmpty ? string.Empty : ": " + string.Join("; ", stats.Errors.GroupBy(e => e).Select(g => $"{g.Count()} x {g.Key}")))}");
        Console.WriteLine($"server log lines at fail/crit: {server.KeptLines.Count}");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"time to first progress (call start → first progress, queue wait included), {ttfp.Length} requests: p50 {Percentile(ttfp, 0.50):F0} ms, p99 {Percentile(ttfp, 0.99):F0} ms, max {ttfp.LastOrDefault():F0} ms"));
        if (afterWarmUp.Count > 0)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"server RSS after the first minute: min {afterWarmUp.Min():F0} MiB, max {afterWarmUp.Max():F0} MiB, last {afterWarmUp[^1]:F0} MiB"));
        }

        Console.WriteLine($"server RSS MiB over time: {sampler.Timeline(Math.Max(5, Math.Round(total * 60 / 10)))}");
        return stats.Errors.IsEmpty ? 0 : 1;
    }

    private static async Task ClientLoopAsync(string address, Random rng, int maxSteps, Stats stats, CancellationToken stop)
    {
        using var channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 << 20 });
        var client = new VqDiffusionService.VqDiffusionServiceClient(channel);
        while (!stop.IsCancellationRequested)
        {
            int steps = rng.Next(1, maxSteps + 1);
            var request = new GenerateRequest
            {
                Prompts = { rng.Next(2) == 0 ? "a photo of a cat" : "a landscape with a lake" },
                NumImagesPerPrompt = rng.Next(1, 5),
                NumInferenceSteps = steps,
                Seed = (ulong)rng.Next(),
                GuidanceScale = 5,
            };
            if (rng.Next(3) == 0)
            {
                request.Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludePreview = true, IncludeTokens = rng.Next(2) == 0 };
            }

            int cancelAfter = rng.Next(4) == 0 ? rng.Next(1, steps + 1) : -1;
            DateTime? deadline = rng.Next(10) == 0 ? DateTime.UtcNow.AddMilliseconds(rng.Next(5, 200)) : null;
            using var cts = new CancellationTokenSource();
            var sw = Stopwatch.StartNew();
            bool firstSeen = false;
            bool completed = false;
            try
            {
                using var call = client.Generate(request, deadline: deadline, cancellationToken: cts.Token);
                int progress = 0;
                await foreach (var e in call.ResponseStream.ReadAllAsync())
                {
                    if (e.Progress is not null)
                    {
                        if (!firstSeen)
                        {
                            firstSeen = true;
                            stats.FirstProgressMs.Add(sw.Elapsed.TotalMilliseconds);
                        }

                        if (++progress == cancelAfter)
                        {
                            cts.Cancel();
                        }
                    }
                    else if (e.Image is not null)
                    {
                        Interlocked.Increment(ref stats.Images);
                    }
                    else if (e.Completed is not null)
                    {
                        completed = true;
                    }
                }

                if (completed)
                {
                    Interlocked.Increment(ref stats.Completed);
                }
                else
                {
                    stats.Errors.Add("a stream ended without completed");
                }
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled && cts.IsCancellationRequested)
            {
                Interlocked.Increment(ref stats.Cancelled);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.DeadlineExceeded && deadline is not null)
            {
                Interlocked.Increment(ref stats.DeadlineExceeded);
            }
            catch (RpcException ex)
            {
                stats.Errors.Add($"{ex.StatusCode} \"{ex.Status.Detail}\"");
            }
        }
    }

    private static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    private sealed class Stats
    {
        public int Completed;
        public int Cancelled;
        public int DeadlineExceeded;
        public int Images;

        public ConcurrentBag<double> FirstProgressMs { get; } = [];

        public ConcurrentBag<string> Errors { get; } = [];
    }
}
