using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// SIGTERM to the real server process while a slow step runs (64×64 latent grid): admission closes, queued requests
/// end at once with UNAVAILABLE, the active run finishes within Generation:DrainTimeout or stops at its next step
/// with UNAVAILABLE, and the process exits with code 0 — never a crash, never a raw reset, no queued job started.
/// Repeated (VQD_SHUTDOWN_ITERATIONS, default 3): every third iteration a drain that lets the run finish, the others one
/// that expires while it runs.
/// </summary>
public sealed class ShutdownTests : IClassFixture<SlowModelFixture>
{
    private readonly SlowModelFixture _model;
    private readonly ITestOutputHelper _output;

    public ShutdownTests(SlowModelFixture model, ITestOutputHelper output)
    {
        _model = model;
        _output = output;
    }

    private static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("VQD_SHUTDOWN_ITERATIONS"), out int n) && n > 0 ? Math.Min(n, 50) : 3;

    [Fact]
    public async Task SigtermDuringASlowStepDrainsAndExitsCleanly()
    {
        for (int i = 0; i < Iterations; i++)
        {
            bool drainCompletes = i % 3 == 0;
            await RunOnceAsync(i, drainCompletes);
        }
    }

    private async Task RunOnceAsync(int iteration, bool drainCompletes)
    {
        // Drain that lets the active run (4 steps) finish, or one that expires while it runs (100 steps).
        int activeSteps = drainCompletes ? 4 : 100;
        string drain = drainCompletes ? "00:02:00" : "00:00:01";
        await using var server = ServerProcess.Start(
            $"--Model:Path={_model.Path}",
            "--Generation:MaxActiveRuns=1",
            "--Generation:MaxQueueLength=4",
            $"--Generation:DrainTimeout={drain}",
            "--Logging:LogLevel:Default=Information",
            "--Logging:LogLevel:Microsoft.AspNetCore=Warning");
        await server.WaitUntilReadyAsync(TimeSpan.FromMinutes(3));

        var ended = new List<string>(); // order in which the streams ended
        string suffix = iteration.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var active = new StreamWatcher();
        Task<StreamEnd> a = Task.Run(() => ReadStreamAsync(server.Client, "a-" + suffix, activeSteps, ended, active));
        await active.FirstProgress.Task.WaitAsync(TimeSpan.FromMinutes(2)); // A is denoising: its next step is under way

        var queuedB = new StreamWatcher();
        var queuedC = new StreamWatcher();
        Task<StreamEnd> b = Task.Run(() => ReadStreamAsync(server.Client, "b-" + suffix, 2, ended, queuedB));
        Task<StreamEnd> c = Task.Run(() => ReadStreamAsync(server.Client, "c-" + suffix, 2, ended, queuedC));
        await queuedB.Queued.Task.WaitAsync(TimeSpan.FromMinutes(1));
        await queuedC.Queued.Task.WaitAsync(TimeSpan.FromMinutes(1));

        server.Terminate();

        StreamEnd endB = await b.WaitAsync(TimeSpan.FromMinutes(2));
        StreamEnd endC = await c.WaitAsync(TimeSpan.FromMinutes(2));

        // Once the queue has been emptied, a new call is refused (by the handler or, once Kestrel stopped listening, the transport).
        var late = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(
            server.Client.Generate(new GenerateRequest { Prompts = { "late" }, NumInferenceSteps = 2, RequestId = "d-" + suffix }, deadline: DateTime.UtcNow.AddSeconds(30))));

        StreamEnd endA = await a.WaitAsync(TimeSpan.FromMinutes(5));
        int exitCode = await server.WaitForExitAsync(TimeSpan.FromMinutes(2));
        string log = server.Output;
        if (Environment.GetEnvironmentVariable("VQD_SHUTDOWN_LOG") == "1")
        {
            _output.WriteLine(log);
        }

        _output.WriteLine($"iteration {iteration} (drain {(drainCompletes ? "completes" : "expires")}): A {endA}; B {endB}; C {endC}; late call {late.StatusCode} \"{late.Status.Detail}\"; ended in order {string.Join(", ", ended)}; exit code {exitCode}");

        Assert.True(exitCode == 0, $"exit code {exitCode}:\n{log}");
        Assert.DoesNotContain("Tensor invalid", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", log, StringComparison.Ordinal);
        Assert.DoesNotContain("ended by the client", log, StringComparison.Ordinal);

        // Queued requests: UNAVAILABLE from the server (not a reset), never started, and before the active run ended.
        foreach (StreamEnd queued in new[] { endB, endC })
        {
            Assert.Equal(StatusCode.Unavailable, queued.Status);
            Assert.Contains("shutting down", queued.Detail, StringComparison.Ordinal);
            Assert.False(queued.Started, $"{queued.Id} started after SIGTERM");
            Assert.True(ended.IndexOf(queued.Id) < ended.IndexOf(endA.Id), $"{queued.Id} ended after the active run: {string.Join(", ", ended)}");
        }

        Assert.Equal(StatusCode.Unavailable, late.StatusCode);

        // The active run: finished with its image, or stopped at a step boundary with the server's UNAVAILABLE.
        if (drainCompletes)
        {
            Assert.True(endA.Status == StatusCode.OK, $"A: {endA}");
            Assert.True(endA.Completed && endA.Images == 1, $"A: {endA}");
        }
        else
        {
            Assert.Equal(StatusCode.Unavailable, endA.Status);
            Assert.Contains("shutting down", endA.Detail, StringComparison.Ordinal);
            Assert.True(endA.Steps < activeSteps, $"A: {endA}");
        }

        // No queued job started after SIGTERM: no "started" line after the shutdown line.
        string[] lines = log.Split('\n');
        int shutdownLine = Array.FindIndex(lines, l => l.Contains("Shutting down:", StringComparison.Ordinal));
        Assert.True(shutdownLine >= 0, "no shutdown line in the log:\n" + log);
        Assert.DoesNotContain(lines.Skip(shutdownLine), l => l.Contains(" started after ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains($"Request a-{suffix} started after", StringComparison.Ordinal));
    }

    private static async Task<StreamEnd> ReadStreamAsync(
        VqDiffusionService.VqDiffusionServiceClient client, string id, int steps, List<string> ended, StreamWatcher? watcher = null)
    {
        var end = new StreamEnd { Id = id };
        try
        {
            using var call = client.Generate(new GenerateRequest { Prompts = { "a slow landscape" }, NumInferenceSteps = steps, Seed = 1, RequestId = id });
            await foreach (GenerateResponse e in call.ResponseStream.ReadAllAsync())
            {
                switch (e.EventCase)
                {
                    case GenerateResponse.EventOneofCase.Queued:
                        watcher?.Queued.TrySetResult();
                        break;
                    case GenerateResponse.EventOneofCase.Started:
                        end.Started = true;
                        break;
                    case GenerateResponse.EventOneofCase.Progress:
                        end.Steps = e.Progress.CompletedSteps;
                        end.Elapsed = e.Progress.Elapsed.ToTimeSpan();
                        watcher?.FirstProgress.TrySetResult();
                        break;
                    case GenerateResponse.EventOneofCase.Image:
                        end.Images++;
                        break;
                    case GenerateResponse.EventOneofCase.Completed:
                        end.Completed = true;
                        break;
                }
            }

            end.Status = StatusCode.OK;
        }
        catch (RpcException ex)
        {
            end.Status = ex.StatusCode;
            end.Detail = ex.Status.Detail;
        }
        finally
        {
            lock (ended)
            {
                ended.Add(id);
            }

            watcher?.Queued.TrySetResult();
            watcher?.FirstProgress.TrySetResult();
        }

        return end;
    }

    /// <summary>Signals from a stream being read.</summary>
    private sealed class StreamWatcher
    {
        public TaskCompletionSource Queued { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource FirstProgress { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>How a stream ended.</summary>
    private sealed class StreamEnd
    {
        public required string Id { get; init; }

        public StatusCode Status { get; set; }

        public string Detail { get; set; } = string.Empty;

        public bool Started { get; set; }

        public int Steps { get; set; }

        public int Images { get; set; }

        public bool Completed { get; set; }

        /// <summary>The last progress event's time since the run started.</summary>
        public TimeSpan Elapsed { get; set; }

        public override string ToString() =>
            $"{Id}: {Status} \"{Detail}\" after {Steps} step(s) in {Elapsed.TotalSeconds:F1} s, started {Started}, {Images} image(s), completed {Completed}";
    }
}
