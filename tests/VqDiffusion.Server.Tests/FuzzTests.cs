using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// Hostile input under load: 300 random and mutated GenerateRequests and raw byte strings (fixed seed), four at a
/// time, on the tiny model. Every reply is a well-formed stream or a status the README lists for bad input (never
/// UNKNOWN or INTERNAL), nothing is logged as an error, and the server is SERVING and generating afterwards.
/// </summary>
public sealed class FuzzTests
{
    private const int Cases = 300;
    private const int Concurrency = 4;

    private static readonly StatusCode[] Allowed = [StatusCode.InvalidArgument, StatusCode.ResourceExhausted, StatusCode.DeadlineExceeded];

    private readonly ITestOutputHelper _output;

    public FuzzTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public async Task RandomAndMutatedRequestsGetAValidStreamOrAClearStatusAndTheServerStaysServing()
    {
        var logs = new CapturedLogs();
        await using var server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", "--Generation:MaxQueueLength=16", "--Generation:MaxActiveRuns=4"],
            configure: s => s.AddSingleton<ILoggerProvider>(logs));
        int logsBefore = logs.Entries.Count; // the start-up's own lines (health while loading) are not the fuzzer's
        var rng = new Random(20261201);
        var cases = new List<(string Kind, byte[] Bytes)>();
        for (int i = 0; i < Cases; i++)
        {
            cases.Add((i % 3) switch
            {
                0 => ("random request", RandomRequest(rng).ToByteArray()),
                1 => ("mutated request", Mutate(rng, RandomRequest(rng, valid: true).ToByteArray())),
                _ => ("random bytes", RandomBytes(rng, rng.Next(0, 80))),
            });
        }

        var outcomes = new Dictionary<string, int>();
        for (int start = 0; start < cases.Count; start += Concurrency)
        {
            var batch = cases.Skip(start).Take(Concurrency).ToList();
            string[] results = await Task.WhenAll(batch.Select(c => RunAsync(server, c.Kind, c.Bytes)));
            foreach (string r in results)
            {
                outcomes[r] = outcomes.GetValueOrDefault(r) + 1;
            }
        }

        foreach (var (outcome, count) in outcomes.OrderBy(o => o.Key, StringComparer.Ordinal))
        {
            _output.WriteLine($"{count,4}  {outcome}");
        }

        Assert.True(outcomes.Keys.Count(k => k.EndsWith(": completed", StringComparison.Ordinal)) > 0, "no case produced a stream");
        Assert.True(outcomes.Keys.Count(k => k.Contains("InvalidArgument", StringComparison.Ordinal)) > 0, "no case was rejected");

        // Still SERVING, and generating.
        var health = new Health.HealthClient(server.Channel);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = "vqdiffusion.v1.VqDiffusionService" })).Status);
        var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = 3, Seed = 1 }));
        Assert.NotNull(events[^1].Completed);
        Assert.DoesNotContain(logs.Entries.Skip(logsBefore), e => e.Level >= LogLevel.Error);
    }

    /// <summary>One case: "kind: completed" for a well-formed stream, "kind: Status" for an allowed status; fails otherwise.</summary>
    private static async Task<string> RunAsync(RunningServer server, string kind, byte[] bytes)
    {
        List<GenerateResponse> events;
        try
        {
            events = await RawCalls.GenerateAsync(server.Channel, bytes, DateTime.UtcNow.AddSeconds(60));
        }
        catch (RpcException ex)
        {
            Assert.True(Allowed.Contains(ex.StatusCode), $"{kind} {Convert.ToHexString(bytes)}: {ex.StatusCode} \"{ex.Status.Detail}\"");
            Assert.False(string.IsNullOrWhiteSpace(ex.Status.Detail));
            Assert.DoesNotContain("Exception", ex.Status.Detail, StringComparison.Ordinal);
            return $"{kind}: {ex.StatusCode}";
        }

        // A stream: queued* started (progress snapshot*)* image+ completed, and nothing after completed.
        string where = $"{kind} {Convert.ToHexString(bytes)}";
        Assert.True(events.Count >= 3, $"{where}: {events.Count} events");
        int started = events.FindIndex(e => e.Started is not null);
        Assert.True(started >= 0 && events.Take(started).All(e => e.Queued is not null), where);
        CompletedEvent completed = events[^1].Completed;
        Assert.True(completed is not null, $"{where}: the stream ended without completed");
        Assert.Equal(completed!.NumImages, events.Count(e => e.Image is not null));
        Assert.Equal(events[started].Started.NumImages, completed.NumImages);
        return $"{kind}: completed";
    }

    private static T Pick<T>(Random rng, params T[] values) => values[rng.Next(values.Length)];

    private static byte[] RandomBytes(Random rng, int length)
    {
        var bytes = new byte[length];
        rng.NextBytes(bytes);
        return bytes;
    }

    private static string RandomText(Random rng)
    {
        int length = Pick(rng, 0, 1, 5, 20, 77, 300, 2049, 3000);
        var sb = new StringBuilder(length);
        for (int i = 0; i < length; i++)
        {
            sb.Append(rng.Next(8) switch
            {
                0 => char.ConvertFromUtf32(rng.Next(0x1F600, 0x1F650)), // astral: a surrogate pair
                1 => ((char)rng.Next(0x00, 0x20)).ToString(),          // control characters, NUL
                2 => ((char)rng.Next(0x4E00, 0x4F00)).ToString(),
                _ => ((char)rng.Next('a', 'z' + 1)).ToString(),
            });
        }

        return sb.ToString();
    }

    /// <summary>A request with random fields; <paramref name="valid"/> keeps most fields in range (a seed for mutation).</summary>
    private static GenerateRequest RandomRequest(Random rng, bool valid = false)
    {
        var r = new GenerateRequest();
        int prompts = valid ? rng.Next(1, 3) : Pick(rng, 0, 1, 1, 1, 2, 3, 17);
        for (int i = 0; i < prompts; i++)
        {
            r.Prompts.Add(valid ? "a photo of a cat" : RandomText(rng));
        }

        r.NumInferenceSteps = valid ? rng.Next(1, 5) : Pick(rng, 1, 2, 3, 4, 6, -1, 0, 101, int.MaxValue, int.MinValue);
        if (rng.Next(2) == 0)
        {
            r.GuidanceScale = valid ? Pick(rng, 1f, 5f) : Pick(rng, -1f, 0f, 1f, 5f, 100.5f, float.NaN, float.PositiveInfinity, 1e-30f);
        }

        if (rng.Next(2) == 0)
        {
            r.TruncationRate = valid ? Pick(rng, 0.5f, 1f) : Pick(rng, 0f, -0.1f, 0.5f, 0.86f, 1f, 1.5f, float.NaN, float.Epsilon);
        }

        r.NumImagesPerPrompt = valid ? rng.Next(0, 3) : Pick(rng, 0, 1, 2, -1, 9, 17, int.MaxValue);
        if (rng.Next(2) == 0)
        {
            r.Seed = Pick(rng, 0UL, 1UL, ulong.MaxValue, (ulong)rng.NextInt64());
        }

        if (!valid && rng.Next(6) == 0)
        {
            int n = Pick(rng, 1, 64, 128, 1000);
            r.InitialLatents.AddRange(Enumerable.Range(0, n).Select(_ => rng.Next(-3, 80)));
        }

        r.ImageFormat = (Grpc.V1.ImageFormat)(valid ? rng.Next(0, 4) : rng.Next(-1, 6));
        r.ImageQuality = valid ? rng.Next(0, 101) : Pick(rng, 0, 1, 50, 100, 101, -1, int.MinValue);
        if (rng.Next(3) == 0)
        {
            r.Snapshots = new SnapshotOptions
            {
                EveryNSteps = valid ? rng.Next(0, 2) : rng.Next(-2, 8),
                IncludeTokens = rng.Next(2) == 0,
                IncludePreview = rng.Next(2) == 0,
                PreviewFormat = (Grpc.V1.ImageFormat)rng.Next(valid ? 0 : -1, valid ? 4 : 6),
                PreviewQuality = valid ? 0 : Pick(rng, 0, 50, 101, -5),
            };
            if (valid && r.Snapshots.EveryNSteps == 0)
            {
                r.Snapshots.IncludeTokens = r.Snapshots.IncludePreview = false;
            }
        }

        if (rng.Next(4) == 0)
        {
            r.RequestId = valid ? "fuzz-" + rng.Next(1000) : Pick(rng, "ok-id", "with space", new string('x', 129), RandomText(rng));
        }

        if (rng.Next(4) == 0)
        {
            r.Sampler = new SamplerOptions
            {
                Kind = (SamplerKind)(valid ? rng.Next(0, 3) : rng.Next(-1, 5)),
                Prior = (UnmaskPrior)(valid ? rng.Next(0, 2) : rng.Next(-1, 6)),
                PriorWeight = valid ? 0 : Pick(rng, 0, -1, 0.5, 2, double.NaN, double.MaxValue),
                ClassifierFreeEmbeddings = (ClassifierFreeEmbeddings)(valid ? rng.Next(0, 3) : rng.Next(-1, 5)),
            };
            if (rng.Next(2) == 0)
            {
                r.Sampler.Speed = valid ? Pick(rng, 0.1, 0.5, 1) : Pick(rng, 0, -1, 0.01, 0.5, 1, 2, double.NaN, double.PositiveInfinity);
            }

            if (!valid && rng.Next(3) == 0)
            {
                r.Sampler.UnmaskSchedule.AddRange(Enumerable.Range(0, rng.Next(0, 30)).Select(_ => rng.Next(-5, 100)));
            }
        }

        if (!valid && rng.Next(5) == 0)
        {
            r.Edit = new EditOptions();
            switch (rng.Next(4))
            {
                case 0:
                    r.Edit.SourceTokens.AddRange(Enumerable.Range(0, Pick(rng, 0, 64, 65)).Select(_ => rng.Next(-1, 70)));
                    break;
                case 1:
                    r.Edit.SourceImage = ByteString.CopyFrom(RandomBytes(rng, rng.Next(0, 200)));
                    break;
                case 2:
                    r.Edit.SourceTokens.AddRange(Enumerable.Range(0, 64).Select(_ => rng.Next(0, 64)));
                    r.Edit.Mask.AddRange(Enumerable.Range(0, Pick(rng, 0, 64, 10)).Select(_ => rng.Next(2) == 0));
                    break;
                default:
                    r.Edit.SourceTokens.AddRange(Enumerable.Range(0, 64).Select(_ => rng.Next(0, 64)));
                    r.Edit.MaskImage = ByteString.CopyFrom(RandomBytes(rng, rng.Next(0, 100)));
                    break;
            }

            if (rng.Next(2) == 0)
            {
                r.Edit.Strength = Pick(rng, 0, 0.5, 1, 1.5, -1, double.NaN);
            }
        }

        return r;
    }

    /// <summary>One to four random edits of the encoded bytes: a flipped bit, a replaced, inserted or deleted byte, a cut.</summary>
    private static byte[] Mutate(Random rng, byte[] bytes)
    {
        var list = bytes.ToList();
        int edits = rng.Next(1, 5);
        for (int i = 0; i < edits && list.Count > 0; i++)
        {
            int at = rng.Next(list.Count);
            switch (rng.Next(6))
            {
                case 0:
                    list[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    list[at] = (byte)rng.Next(256);
                    break;
                case 2:
                    list.Insert(at, (byte)rng.Next(256));
                    break;
                case 3:
                    list.RemoveAt(at);
                    break;
                case 4:
                    list.RemoveRange(at, list.Count - at);
                    break;
                default:
                    list.InsertRange(at, list.Skip(at).Take(rng.Next(1, 8)).ToList());
                    break;
            }
        }

        return list.ToArray();
    }
}
