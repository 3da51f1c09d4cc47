using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// Concurrency figures against the server as its own process (never pass/fail): a short request arriving behind a
/// long one, with one active run at a time and with interleaving; throughput of 1, 4 and 8 concurrent requests.
/// </summary>
internal static class ConcurrencyBenchmark
{
    public static async Task<int> RunAsync(string repo, string[] args)
    {
        string model = BenchArgs.Value(args, "--model") ?? Path.Combine(repo, "models", "tiny-ithq");
        int longSteps = int.Parse(BenchArgs.Value(args, "--long-steps") ?? "100", CultureInfo.InvariantCulture);
        int shortSteps = int.Parse(BenchArgs.Value(args, "--short-steps") ?? "10", CultureInfo.InvariantCulture);
        int longImages = int.Parse(BenchArgs.Value(args, "--long-images") ?? "1", CultureInfo.InvariantCulture);
        int[] concurrency = (BenchArgs.Value(args, "--concurrency") ?? "1,4,8").Split(',').Select(int.Parse).ToArray();
        Console.WriteLine($"model {model}; long request {longSteps} steps × {longImages} image(s), short {shortSteps} steps; guidance 5; {Environment.ProcessorCount} cores");
        Console.WriteLine();
        Console.WriteLine("| Generation:MaxActiveRuns | short: first progress after arrival (s) | short: completed after arrival (s) | long: completed (s from its start) | step time alone (s) |");
        Console.WriteLine("|---|---|---|---|---|");
        foreach (int active in new[] { 1, 4 })
        {
            await using var server = await ServerProcess.StartAsync(repo, model, $"--Generation:MaxActiveRuns={active}", "--Generation:MaxImagesPerPrompt=64", "--Generation:MaxBatchSize=64");
            var client = server.Client;
            GenerateRequest Long() => new() { Prompts = { "a landscape with a lake" }, NumInferenceSteps = longSteps, NumImagesPerPrompt = longImages, GuidanceScale = 5, Seed = 1 };
            GenerateRequest Short() => new() { Prompts = { "a photo of a cat" }, NumInferenceSteps = shortSteps, GuidanceScale = 5, Seed = 2 };

            // Step time alone: the short request on an idle server.
            var alone = await TimedAsync(client, Short());
            double stepAlone = alone.StepSeconds;

            var longClock = Stopwatch.StartNew();
            var longCall = client.Generate(Long());
            var second = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var longDone = Task.Run(async () =>
            {
                try
                {
                    int progress = 0;
                    await foreach (var e in longCall.ResponseStream.ReadAllAsync())
                    {
                        if (e.Progress is not null && ++progress == 2)
                        {
                            second.TrySetResult();
                        }
                    }

                    return longClock.Elapsed.TotalSeconds;
                }
                finally
                {
                    second.TrySetResult();
                }
            });
            await second.Task;

            var shortResult = await TimedAsync(client, Short());
            double longSeconds = await longDone;
            longCall.Dispose();
            Console.WriteLine($"| {active} | {shortResult.FirstProgressSeconds:F2} | {shortResult.TotalSeconds:F2} | {longSeconds:F2} | {stepAlone:F3} |");
        }

        Console.WriteLine();
        bool batched = args.Contains("--batched");
        string[] throughputSettings = batched ? ["--Generation:BatchedForwards=true"] : [];
        if (batched)
        {
            Console.WriteLine("(Generation:BatchedForwards=true: one transformer forward per step for all active runs)");
        }

        await using (var server = await ServerProcess.StartAsync(repo, model, throughputSettings))
        {
            if (batched)
            {
                // Agreement of batched runs with the same requests alone: final image bytes.
                var requests = Enumerable.Range(0, 4).Select(i => new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = shortSteps, GuidanceScale = 5, TruncationRate = 0.86f, Seed = (ulong)(50 + i) }).ToList();
                var together = await Task.WhenAll(requests.Select(r => ImagesAsync(server.Client, r)));
                int same = 0;
                for (int i = 0; i < requests.Count; i++)
                {
                    same += (await ImagesAsync(server.Client, requests[i])).SequenceEqual(together[i]) ? 1 : 0;
                }

                Console.WriteLine($"batched vs alone: {same} of {requests.Count} requests gave byte-identical images");
            }

            Console.WriteLine("| concurrent requests (each " + shortSteps + " steps, 1 image) | wall (s) | images/min | mean time to first progress (s) |");
            Console.WriteLine("|---|---|---|---|");
            foreach (int n in concurrency)
            {
                var sw = Stopwatch.StartNew();
                var results = await Task.WhenAll(Enumerable.Range(0, n).Select(i => TimedAsync(server.Client,
                    new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = shortSteps, GuidanceScale = 5, Seed = (ulong)i })));
                double wall = sw.Elapsed.TotalSeconds;
                Console.WriteLine($"| {n} | {wall:F2} | {n / wall * 60:F1} | {results.Average(r => r.FirstProgressSeconds):F2} |");
            }
        }

        return 0;
    }

    private static async Task<byte[]> ImagesAsync(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request)
    {
        using var call = client.Generate(request);
        var bytes = new List<byte>();
        await foreach (var e in call.ResponseStream.ReadAllAsync())
        {
            if (e.Image is not null)
            {
                bytes.AddRange(e.Image.Data.ToByteArray());
            }
        }

        return bytes.ToArray();
    }

    /// <summary>Runs one Generate to its end: seconds to the first progress, in all, and per step after the first.</summary>
    internal static async Task<(double FirstProgressSeconds, double TotalSeconds, double StepSeconds)> TimedAsync(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request)
    {
        var sw = Stopwatch.StartNew();
        double first = -1;
        double last = 0;
        int steps = 0;
        using var call = client.Generate(request);
        await foreach (var e in call.ResponseStream.ReadAllAsync())
        {
            if (e.Progress is not null)
            {
                steps++;
                last = sw.Elapsed.TotalSeconds;
                if (first < 0)
                {
                    first = last;
                }
            }
        }

        return (first, sw.Elapsed.TotalSeconds, steps > 1 ? (last - first) / (steps - 1) : last);
    }
}

/// <summary>The Release server as a separate process on a free loopback port, killed on dispose.</summary>
internal sealed class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly GrpcChannel _channel;
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _lines;

    private ServerProcess(Process process, GrpcChannel channel, double readySeconds, System.Collections.Concurrent.ConcurrentQueue<string> lines)
    {
        _process = process;
        _channel = channel;
        _lines = lines;
        Client = new VqDiffusionService.VqDiffusionServiceClient(channel);
        ReadySeconds = readySeconds;
    }

    public VqDiffusionService.VqDiffusionServiceClient Client { get; }

    public int Pid => _process.Id;

    /// <summary>Seconds from process start to the model answering (SERVING, after the warm-up).</summary>
    public double ReadySeconds { get; }

    public string Address { get; private set; } = string.Empty;

    /// <summary>The server's output lines that the <c>keepLine</c> filter of <see cref="StartAsync(string, string, Func{string, bool}, string[])"/> kept.</summary>
    public IReadOnlyList<string> KeptLines => _lines.ToArray();

    public static Task<ServerProcess> StartAsync(string repo, string model, params string[] settings) => StartAsync(repo, model, _ => false, settings);

    public static async Task<ServerProcess> StartAsync(string repo, string model, Func<string, bool> keepLine, params string[] settings)
    {
        string serverDll = Path.Combine(repo, "src", "VqDiffusion.Server", "bin", "Release", "net10.0", "VqDiffusion.Server.dll");
        int port = Ports.Free();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { serverDll, "--urls", $"http://127.0.0.1:{port}", $"--Model:Path={model}", "--Logging:LogLevel:Default=Warning" }.Concat(settings))
        {
            psi.ArgumentList.Add(a);
        }

        var clock = Stopwatch.StartNew();
        var process = Process.Start(psi)!;
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line && keepLine(line))
            {
                lines.Enqueue(line);
            }
        };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var channel = GrpcChannel.ForAddress($"http://127.0.0.1:{port}", new GrpcChannelOptions { MaxReceiveMessageSize = 64 << 20 });
        var client = new VqDiffusionService.VqDiffusionServiceClient(channel);
        while (true)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"the server exited with code {process.ExitCode}");
            }

            try
            {
                await client.GetModelInfoAsync(new GetModelInfoRequest());
                break;
            }
            catch (RpcException)
            {
                await Task.Delay(20);
            }
        }

        return new ServerProcess(process, channel, clock.Elapsed.TotalSeconds, lines) { Address = $"http://127.0.0.1:{port}" };
    }

    public async ValueTask DisposeAsync()
    {
        _channel.Dispose();
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
        _process.Dispose();
    }
}
