using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// Memory per request with a stalled reader (figures, never pass/fail): the same preview-heavy requests, first read
/// by their clients, then opened by clients that read nothing until the runs are over, with the default event buffer
/// (progress and snapshots coalesced past <c>Generation:EventBufferBytes</c>) and with an effectively unbounded one
/// (what the server did before). Reports server RSS (VmRSS) over time, what each client received, and the server's
/// own peak of buffered bytes per stream (its log line).
///   stalled [--model DIR] [--streams 4] [--prompts 2] [--images 8] [--steps 100] [--preview-format png|jpeg]
/// </summary>
internal static partial class StalledBenchmark
{
    public static async Task<int> RunAsync(string repo, string[] args)
    {
        string model = BenchArgs.Value(args, "--model") ?? Path.Combine(repo, "models", "tiny-ithq");
        int streams = BenchArgs.Int(args, "--streams") ?? 4;
        int prompts = BenchArgs.Int(args, "--prompts") ?? 2;
        int images = BenchArgs.Int(args, "--images") ?? 8;
        int steps = BenchArgs.Int(args, "--steps") ?? 100;
        ImageFormat previewFormat = (BenchArgs.Value(args, "--preview-format") ?? "png") == "jpeg" ? ImageFormat.Jpeg : ImageFormat.Png;
        int batch = prompts * images;
        Console.WriteLine($"model {model}; {streams} concurrent streams, each {prompts} prompt(s) x {images} image(s) x {steps} steps with a {previewFormat} preview and the tokens of every image after every step; {Environment.ProcessorCount} cores");
        Console.WriteLine();
        Console.WriteLine("| event buffer | clients | server RSS idle (MiB) | peak RSS (MiB) | peak − idle per stream (MiB) | per stream: events received / sent by the model | dropped_events | images | peak buffered per stream (server log, KiB) |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        var timelines = new List<string>();
        foreach (var (label, budget) in new (string, long?)[] { ("1 MiB (default)", null), ("unbounded (1 TiB; as before)", 1L << 40) })
        {
            var settings = new List<string>
            {
                $"--Generation:MaxActiveRuns={streams}",
                $"--Generation:MaxQueueLength={streams * 2}",
                $"--Generation:MaxImagesPerPrompt={Math.Max(8, images)}",
                $"--Generation:MaxBatchSize={Math.Max(16, batch)}",
                "--Logging:LogLevel:VqDiffusion=Information",
                "--Logging:LogLevel:VqDiffusion.Server.Services.VqDiffusionGrpcService=Debug", // its peak of buffered bytes per request
            };
            if (budget is long b)
            {
                settings.Add($"--Generation:EventBufferBytes={b}");
            }

            await using var server = await ServerProcess.StartAsync(repo, model, line => line.Contains(" completed: ", StringComparison.Ordinal) || line.Contains("KiB", StringComparison.Ordinal), [.. settings]);
            GenerateRequest Request(string id) => new()
            {
                Prompts = { Enumerable.Range(0, prompts).Select(p => $"a landscape with a lake, variation {p}") },
                NumImagesPerPrompt = images,
                NumInferenceSteps = steps,
                Seed = 3,
                RequestId = id,
                Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true, IncludePreview = true, PreviewFormat = previewFormat },
            };
            int sentPerStream = steps * (1 + batch);

            // Warm-up (the first request's one-time allocations), then the idle figure.
            GenerateRequest warmUp = Request("warm-up");
            warmUp.NumInferenceSteps = 2;
            await ReadAsync(server.Client, warmUp);
            await Task.Delay(1000);
            double idle = ProcessStats.RssMiB(server.Pid);

            // Clients that read.
            var sampler = new RssSampler(server.Pid, TimeSpan.FromMilliseconds(200));
            var clock = Stopwatch.StartNew();
            var read = await Task.WhenAll(Enumerable.Range(0, streams).Select(i => ReadAsync(server.Client, Request($"read-{i}"))));
            double readSeconds = clock.Elapsed.TotalSeconds;
            await sampler.StopAsync();
            Row(label, "reading", idle, sampler.PeakMiB, streams, read, sentPerStream, "—");
            await Task.Delay(1000);

            // Clients that read nothing (each on its own connection) until the server has finished their runs.
            idle = ProcessStats.RssMiB(server.Pid);
            sampler = new RssSampler(server.Pid, TimeSpan.FromMilliseconds(200));
            var channels = Enumerable.Range(0, streams).Select(_ => GrpcChannel.ForAddress(server.Address, new GrpcChannelOptions { MaxReceiveMessageSize = 64 << 20 })).ToList();
            var calls = channels.Select((c, i) => new VqDiffusionService.VqDiffusionServiceClient(c).Generate(Request($"stalled-{i}"))).ToList();
            var deadline = Stopwatch.StartNew();
            while (server.KeptLines.Count(l => l.Contains("Request stalled-", StringComparison.Ordinal) && l.Contains(" completed: ", StringComparison.Ordinal)) < streams
                && deadline.Elapsed < TimeSpan.FromSeconds((readSeconds * 4) + 60))
            {
                await Task.Delay(200);
            }

            double stalledSeconds = deadline.Elapsed.TotalSeconds;
            await Task.Delay(1000); // RSS with every run over and nothing read yet
            var stalled = await Task.WhenAll(calls.Select(c => ReadCallAsync(c)));
            await sampler.StopAsync();
            await Task.Delay(500);
            var buffered = server.KeptLines
                .Where(l => l.Contains("Request stalled-", StringComparison.Ordinal))
                .Select(l => BufferedPattern().Match(l))
                .Where(m => m.Success)
                .Select(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))
                .ToList();
            Row(label, $"stalled ({stalledSeconds:F0} s unread)", idle, sampler.PeakMiB, streams, stalled, sentPerStream,
                buffered.Count == 0 ? "(no log line)" : $"{buffered.Min()}–{buffered.Max()}");
            timelines.Add($"{label}, stalled clients, RSS MiB over time: {sampler.Timeline(Math.Max(1, Math.Round(stalledSeconds / 12)))}");
            calls.ForEach(c => c.Dispose());
            channels.ForEach(c => c.Dispose());
        }

        Console.WriteLine();
        timelines.ForEach(Console.WriteLine);
        return 0;
    }

    private static void Row(string label, string clients, double idle, double peak, int streams, (int Events, int Dropped, int Images)[] results, int sentPerStream, string buffered)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {label} | {clients} | {idle:F0} | {peak:F0} | {(peak - idle) / streams:F1} | {results.Average(r => r.Events):F0} / {sentPerStream} | {results.Average(r => r.Dropped):F0} | {results.Min(r => r.Images)} | {buffered} |"));
    }

    private static async Task<(int Events, int Dropped, int Images)> ReadAsync(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request)
    {
        using var call = client.Generate(request);
        return await ReadCallAsync(call);
    }

    /// <summary>Progress and snapshot events received, the server's dropped count, images.</summary>
    private static async Task<(int Events, int Dropped, int Images)> ReadCallAsync(AsyncServerStreamingCall<GenerateResponse> call)
    {
        int events = 0;
        int images = 0;
        int dropped = -1;
        await foreach (var e in call.ResponseStream.ReadAllAsync())
        {
            if (e.Progress is not null || e.Snapshot is not null)
            {
                events++;
            }
            else if (e.Image is not null)
            {
                images++;
            }
            else if (e.Completed is not null)
            {
                dropped = e.Completed.DroppedEvents;
            }
        }

        return (events, dropped, images);
    }

    [GeneratedRegex(@"at most (\d+) KiB")]
    private static partial Regex BufferedPattern();
}
