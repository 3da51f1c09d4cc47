using System.Diagnostics;
using System.Text;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

/// <summary><c>Tracing:OtlpEndpoint</c>: spans reach an OTLP/HTTP collector (a stand-in on a loopback port).</summary>
public sealed class OtlpExportTests
{
    [Fact]
    public async Task SpansOfAGenerateCallAreExportedWithTheClientsTraceId()
    {
        await using FakeOtlpReceiver collector = await FakeOtlpReceiver.StartAsync();
        var traceId = ActivityTraceId.CreateRandom();
        await using (RunningServer server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", $"--Tracing:OtlpEndpoint={collector.Address}", "--Tracing:OtlpProtocol=http/protobuf"]))
        {
            var headers = new Metadata { { "traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom()}-01" } };
            var events = await StreamCollector.ReadAllAsync(server.Client.Generate(new GenerateRequest { Prompts = { "a red car" }, NumInferenceSteps = 3, Seed = 9 }, headers));
            Assert.Single(events, e => e.Completed is not null);
        } // stopping the server flushes the batch of spans

        byte[] all = collector.Bodies.SelectMany(b => b).ToArray();
        Assert.NotEmpty(collector.Bodies);
        Assert.True(Contains(all, Convert.FromHexString(traceId.ToHexString())), "the client's trace id is in the exported spans");
        foreach (string expected in new[] { "vqdiffusion-grpc", "VqDiffusion.Server", "Generate", "queue", "encode", "denoise", "decode", "step" })
        {
            Assert.True(Contains(all, Encoding.UTF8.GetBytes(expected)), $"'{expected}' is in the exported spans");
        }
    }

    private static bool Contains(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle) >= 0;
}
