using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Telemetry;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// Spans of real calls, recorded by an <see cref="ActivityListener"/> in the test: the trace context sent by the
/// client in <c>traceparent</c> metadata carries over to the request's span, the call's and its job's.
/// </summary>
public sealed class TracingTests : IClassFixture<SharedServerFixture>
{
    private const string HostingSource = "Microsoft.AspNetCore";
    private readonly RunningServer _server;
    private readonly ITestOutputHelper _output;

    public TracingTests(SharedServerFixture fixture, ITestOutputHelper output)
    {
        _server = fixture.Server;
        _output = output;
    }

    [Fact]
    public async Task GenerateSpansJoinTheClientsTrace()
    {
        var traceId = ActivityTraceId.CreateRandom();
        var clientSpanId = ActivitySpanId.CreateRandom();
        using var recorder = new SpanRecorder(traceId);

        var headers = new Metadata { { "traceparent", $"00-{traceId}-{clientSpanId}-01" } };
        var request = new GenerateRequest { Prompts = { "a red car", "a cute puppy" }, NumInferenceSteps = 5, Seed = 7 };
        List<GenerateResponse> events = await StreamCollector.ReadAllAsync(_server.Client.Generate(request, headers));
        string requestId = events.Single(e => e.Started is not null).Started.RequestId;
        int steps = events.Count(e => e.Progress is not null);

        Activity generate = await recorder.WaitForAsync(ServerTracing.SourceName, "Generate");
        foreach (Activity a in recorder.Spans)
        {
            _output.WriteLine($"{a.Source.Name} {a.OperationName} span {a.SpanId} parent {a.ParentSpanId} {a.Duration.TotalMilliseconds:F1} ms events {a.Events.Count()}");
        }

        // Client span -> ASP.NET Core request span -> Generate -> queue, encode, denoise, decode; one trace id.
        Activity hosting = recorder.Spans.Single(a => a.Source.Name == HostingSource);
        Assert.Equal(clientSpanId, hosting.ParentSpanId);
        Assert.Equal(hosting.SpanId, generate.ParentSpanId);
        Assert.All(recorder.Spans, a => Assert.Equal(traceId, a.TraceId));
        Assert.Equal("Generate", generate.GetTagItem("rpc.method"));
        Assert.Equal(0, generate.GetTagItem("rpc.grpc.status_code"));
        Assert.Equal(requestId, generate.GetTagItem("vqd.request_id"));
        Assert.NotEqual(ActivityStatusCode.Error, generate.Status);

        string[] children = ["queue", "encode", "denoise", "decode"];
        var ours = recorder.Spans.Where(a => a.Source.Name == ServerTracing.SourceName && a != generate).ToList();
        Assert.Equal(children.Order(), ours.Select(a => a.OperationName).Order());
        Assert.All(ours, a =>
        {
            Assert.Equal(generate.SpanId, a.ParentSpanId);
            Assert.Equal(requestId, a.GetTagItem("vqd.request_id"));
            Assert.NotEqual(ActivityStatusCode.Error, a.Status);
        });

        Activity denoise = ours.Single(a => a.OperationName == "denoise");
        var stepEvents = denoise.Events.Where(e => e.Name == "step").ToList();
        Assert.Equal(steps, stepEvents.Count);
        Assert.Equal(Enumerable.Range(1, steps), stepEvents.Select(e => (int)e.Tags.Single(t => t.Key == "vqd.step").Value!));
        Assert.Equal(
            events.Where(e => e.Progress is not null).Select(e => e.Progress.Timestep),
            stepEvents.Select(e => (long)e.Tags.Single(t => t.Key == "vqd.timestep").Value!));
        Assert.Equal(2, ours.Single(a => a.OperationName == "decode").GetTagItem("vqd.images"));
    }

    [Fact]
    public async Task AFailedCallHasAnErrorSpanWithItsStatus()
    {
        var traceId = ActivityTraceId.CreateRandom();
        using var recorder = new SpanRecorder(traceId);
        var headers = new Metadata { { "traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom()}-01" } };
        var error = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(
            _server.Client.Generate(new GenerateRequest { Prompts = { "x" }, NumImagesPerPrompt = 1000 }, headers)));
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);

        Activity generate = await recorder.WaitForAsync(ServerTracing.SourceName, "Generate");
        Assert.Equal(ActivityStatusCode.Error, generate.Status);
        Assert.StartsWith("INVALID_ARGUMENT", generate.StatusDescription);
        Assert.Equal((int)StatusCode.InvalidArgument, generate.GetTagItem("rpc.grpc.status_code"));

        // Rejected before it was queued: no job spans.
        Assert.DoesNotContain(recorder.Spans, a => a.Source.Name == ServerTracing.SourceName && a != generate);
    }

    [Fact]
    public async Task ACancelledRunClosesItsOpenSpans()
    {
        // The run waits before its second step until the call's span has stopped, so the cancellation always
        // lands in the middle of the denoising.
        using var release = new ManualResetEventSlim();
        await using RunningServer server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}"],
            configure: s => s.AddSingleton<IGenerationStepHook>(new WaitingHook(release)));
        try
        {
            var traceId = ActivityTraceId.CreateRandom();
            using var recorder = new SpanRecorder(traceId);
            var headers = new Metadata { { "traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom()}-01" } };
            using var cts = new CancellationTokenSource();
            using var call = server.Client.Generate(new GenerateRequest { Prompts = { "a red car" }, NumInferenceSteps = 6, Seed = 5 }, headers, cancellationToken: cts.Token);
            var error = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                await foreach (GenerateResponse e in call.ResponseStream.ReadAllAsync(cts.Token))
                {
                    if (e.Progress is not null)
                    {
                        cts.Cancel(); // after the first step
                    }
                }
            });
            Assert.Equal(StatusCode.Cancelled, error.StatusCode);

            Activity generate = await recorder.WaitForAsync(ServerTracing.SourceName, "Generate");
            Assert.Equal(ActivityStatusCode.Error, generate.Status);
            Assert.Equal((int)StatusCode.Cancelled, generate.GetTagItem("rpc.grpc.status_code"));
            Activity denoise = await recorder.WaitForAsync(ServerTracing.SourceName, "denoise");
            Assert.Equal(ActivityStatusCode.Error, denoise.Status);
            Assert.Equal(generate.SpanId, denoise.ParentSpanId);
            Assert.Single(denoise.Events, e => e.Name == "step");
            Assert.DoesNotContain(recorder.Spans, a => a.OperationName == "decode");
        }
        finally
        {
            release.Set();
        }
    }

    /// <summary>Holds the model thread before a run's second step until released (at most a minute).</summary>
    private sealed class WaitingHook(ManualResetEventSlim release) : IGenerationStepHook
    {
        public void BeforeStep(string requestId, int completedSteps, int totalSteps)
        {
            if (completedSteps == 1)
            {
                release.Wait(TimeSpan.FromMinutes(1));
            }
        }
    }

    /// <summary>Records the stopped spans of one trace, from this server's source and ASP.NET Core's.</summary>
    private sealed class SpanRecorder : IDisposable
    {
        private readonly ConcurrentQueue<Activity> _spans = new();
        private readonly ActivityListener _listener;

        public SpanRecorder(ActivityTraceId traceId)
        {
            _listener = new ActivityListener
            {
                ShouldListenTo = source => source.Name is ServerTracing.SourceName or HostingSource,
                Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
                ActivityStopped = activity =>
                {
                    if (activity.TraceId == traceId)
                    {
                        _spans.Enqueue(activity);
                    }
                },
            };
            ActivitySource.AddActivityListener(_listener);
        }

        public IReadOnlyList<Activity> Spans => _spans.ToList();

        /// <summary>The span once stopped (the call's span stops just after the client has seen the status).</summary>
        public async Task<Activity> WaitForAsync(string source, string name)
        {
            for (int i = 0; i < 200; i++)
            {
                if (_spans.FirstOrDefault(a => a.Source.Name == source && a.OperationName == name) is { } found)
                {
                    return found;
                }

                await Task.Delay(50);
            }

            throw new Xunit.Sdk.XunitException($"no {name} span from {source}; recorded: {string.Join(", ", _spans.Select(a => a.OperationName))}");
        }

        public void Dispose() => _listener.Dispose();
    }
}
