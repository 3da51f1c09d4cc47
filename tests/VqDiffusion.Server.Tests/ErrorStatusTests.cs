using System.Runtime.InteropServices;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

/// <summary>
/// Every failure is a clear status: undecodable requests are INVALID_ARGUMENT without a stack trace in the log, a
/// failure inside the model is INTERNAL with the request id, out-of-memory is RESOURCE_EXHAUSTED, and clients never
/// see the exception's text.
/// </summary>
public sealed class ErrorStatusTests : IClassFixture<FaultServerFixture>
{
    private readonly FaultServerFixture _fixture;

    public ErrorStatusTests(FaultServerFixture fixture) => _fixture = fixture;

    private RunningServer Server => _fixture.Server;

    public static TheoryData<string, byte[]> MalformedRequests => new()
    {
        { "a varint that never ends", [0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] },
        { "a length past the end", [0x0A, 0x10, 0x61] },
        { "tag zero", [0x00, 0x01] },
        { "an end-group tag without a start", [0x0C] },
        { "a nested message cut short", [0x52, 0x04, 0x08, 0x01, 0x10] },
    };

    [Theory]
    [MemberData(nameof(MalformedRequests))]
    public async Task MalformedProtobufIsInvalidArgumentWithOneLogLineAndNoStackTrace(string name, byte[] bytes)
    {
        int before = _fixture.Logs.Entries.Count;
        var ex = await Assert.ThrowsAsync<RpcException>(() => RawCalls.GenerateAsync(Server.Channel, bytes));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.StartsWith("the request is not a valid vqdiffusion.v1.GenerateRequest message (malformed protobuf", ex.Status.Detail);
        AssertLoggedOnceWithoutStackTrace(before, name);
    }

    [Theory]
    [InlineData("prompts", new byte[] { 0x0A, 0x02, 0xC3, 0x28 })]
    [InlineData("request_id", new byte[] { 0x0A, 0x01, 0x61, 0x5A, 0x03, 0xE2, 0x28, 0xA1 })]
    [InlineData("a lone surrogate", new byte[] { 0x0A, 0x03, 0xED, 0xA0, 0x80 })]
    public async Task InvalidUtf8InAStringFieldIsInvalidArgument(string name, byte[] bytes)
    {
        int before = _fixture.Logs.Entries.Count;
        var ex = await Assert.ThrowsAsync<RpcException>(() => RawCalls.GenerateAsync(Server.Channel, bytes));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("the request is not a valid vqdiffusion.v1.GenerateRequest message (a string field is not valid UTF-8)", ex.Status.Detail);
        AssertLoggedOnceWithoutStackTrace(before, name);
    }

    [Fact]
    public async Task AnUndecodableUnaryRequestIsInvalidArgumentToo()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => RawCalls.GetModelInfoAsync(Server.Channel, [0x0A, 0x05, 0x01]));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains("vqdiffusion.v1.GetModelInfoRequest", ex.Status.Detail);

        // The same bytes path serves valid requests: an empty message is a valid GetModelInfoRequest.
        byte[] info = await RawCalls.GetModelInfoAsync(Server.Channel, []);
        Assert.True(GetModelInfoResponse.Parser.ParseFrom(info).LatentHeight > 0);
    }

    [Fact]
    public async Task AFailureInsideTheModelIsInternalWithTheRequestIdAndNothingOfTheException()
    {
        _fixture.Faults.Inject("model-fault", atStep: 2, () => new InvalidOperationException("could not read /srv/models/secret/transformer.bin: parser state 0x7f"));
        int before = _fixture.Logs.Entries.Count;
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(Server.Client.Generate(Request("model-fault"))));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Equal("generation failed inside the model (request id model-fault); see the server log", ex.Status.Detail);

        // The details are in the log once, with the request id.
        var errors = _fixture.Logs.Entries.Skip(before).Where(e => e.Exception is not null).ToList();
        var entry = Assert.Single(errors);
        Assert.Equal(LogLevel.Error, entry.Level);
        Assert.Contains("model-fault", entry.Message);
        Assert.Contains("/srv/models/secret", entry.Exception!.Message);

        // The server goes on serving.
        var events = await StreamCollector.ReadAllAsync(Server.Client.Generate(Request("after-fault")));
        Assert.NotNull(events[^1].Completed);
    }

    public static TheoryData<string, Func<Exception>> OutOfMemoryFailures => new()
    {
        { "libtorch CPU", () => new ExternalException("DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)\nException raised from alloc_cpu at /pytorch/c10/core/impl/alloc_cpu.cpp:90") },
        { "libtorch CUDA", () => new ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 13.10 GiB already allocated)\nException raised from malloc at /pytorch/c10/cuda/CUDACachingAllocator.cpp:1147") },
        { "managed", () => new OutOfMemoryException("Array dimensions exceeded supported range.") },
        { "wrapped", () => new InvalidOperationException("decode failed", new ExternalException("CUDA error: out of memory")) },
    };

    [Theory]
    [MemberData(nameof(OutOfMemoryFailures))]
    public async Task OutOfMemoryInsideTheModelIsResourceExhausted(string name, Func<Exception> fault)
    {
        string id = "oom-" + name.Replace(' ', '-');
        _fixture.Faults.Inject(id, atStep: 1, fault);
        var ex = await Assert.ThrowsAsync<RpcException>(() => StreamCollector.ReadAllAsync(Server.Client.Generate(Request(id))));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal($"the server ran out of memory running request {id}; retry later, or with fewer images per request", ex.Status.Detail);
        Assert.DoesNotContain("pytorch", ex.Status.Detail);
    }

    [Fact]
    public async Task AnExceptionEscapingAHandlerIsInternalWithARequestId()
    {
        var interceptor = new StatusInterceptor(NullLogger<StatusInterceptor>.Instance);
        var context = new TestServerCallContext("/vqdiffusion.v1.VqDiffusionService/Generate");
        StatusInterceptor.SetRequestId(context, "escaped-1");
        var ex = await Assert.ThrowsAsync<RpcException>(() => interceptor.ServerStreamingServerHandler<object, object>(
            new object(), null!, context, (_, _, _) => throw new NullReferenceException("at /home/build/src/Secret.cs:line 12")));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Equal("internal error serving request escaped-1; see the server log", ex.Status.Detail);

        // Out of memory in the gRPC layer, before the handler named a request id: RESOURCE_EXHAUSTED with a fresh one.
        var oom = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<object, object>(
            new object(), new TestServerCallContext("/vqdiffusion.v1.VqDiffusionService/GetModelInfo"), (_, _) => throw new OutOfMemoryException()));
        Assert.Equal(StatusCode.ResourceExhausted, oom.StatusCode);
        Assert.Matches("^the server ran out of memory serving request [0-9a-f]{16}; retry later", oom.Status.Detail);

        // Cancelled by the server (it is stopping), not by the client: UNAVAILABLE, retryable.
        var stopped = await Assert.ThrowsAsync<RpcException>(() => interceptor.ServerStreamingServerHandler<object, object>(
            new object(), null!, context, (_, _, _) => throw new OperationCanceledException("the server is stopping")));
        Assert.Equal(StatusCode.Unavailable, stopped.StatusCode);
        Assert.Equal("the server stopped request escaped-1 before it finished; retry", stopped.Status.Detail);

        // The client's own cancellation passes through for grpc-dotnet to end the call.
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAsync<OperationCanceledException>(() => interceptor.ServerStreamingServerHandler<object, object>(
            new object(), null!, new TestServerCallContext("/vqdiffusion.v1.VqDiffusionService/Generate", cancelled.Token), (_, _, _) => throw new OperationCanceledException(cancelled.Token)));

        // A handler's own status passes through unchanged.
        var own = new RpcException(new Status(StatusCode.InvalidArgument, "prompts must not be empty"));
        var passed = await Assert.ThrowsAsync<RpcException>(() => interceptor.UnaryServerHandler<object, object>(new object(), context, (_, _) => throw own));
        Assert.Same(own, passed);
    }

    private static GenerateRequest Request(string id) => new() { Prompts = { "a photo of a cat" }, NumInferenceSteps = 4, Seed = 3, RequestId = id };

    private void AssertLoggedOnceWithoutStackTrace(int before, string name)
    {
        var entries = _fixture.Logs.Entries.Skip(before).ToList();
        Assert.All(entries, e => Assert.Null(e.Exception));
        Assert.Single(entries, e => e.Message.StartsWith("Rejected an undecodable", StringComparison.Ordinal));
        Assert.DoesNotContain(entries, e => e.Level >= LogLevel.Error);
        _ = name;
    }
}
