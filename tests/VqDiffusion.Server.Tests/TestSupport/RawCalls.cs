using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// Calls with arbitrary request bytes (a <see cref="Method{TRequest, TResponse}"/> with byte marshallers): what a
/// broken or hostile client can send, which the generated client cannot.
/// </summary>
public static class RawCalls
{
    private static readonly Marshaller<byte[]> Bytes = Marshallers.Create(b => b, b => b);

    private static readonly Method<byte[], GenerateResponse> Generate = new(
        MethodType.ServerStreaming, VqDiffusionService.Descriptor.FullName, "Generate", Bytes, Marshallers.Create<GenerateResponse>(r => r.ToByteArray(), GenerateResponse.Parser.ParseFrom));

    private static readonly Method<byte[], byte[]> GetModelInfo = new(
        MethodType.Unary, VqDiffusionService.Descriptor.FullName, "GetModelInfo", Bytes, Bytes);

    /// <summary>Sends <paramref name="request"/> as the Generate request message and reads the stream to its end.</summary>
    public static async Task<List<GenerateResponse>> GenerateAsync(GrpcChannel channel, byte[] request, DateTime? deadline = null)
    {
        using var call = channel.CreateCallInvoker().AsyncServerStreamingCall(Generate, null, new CallOptions(deadline: deadline), request);
        var events = new List<GenerateResponse>();
        await foreach (GenerateResponse e in call.ResponseStream.ReadAllAsync())
        {
            events.Add(e);
        }

        return events;
    }

    /// <summary>Sends <paramref name="request"/> as the GetModelInfo request message.</summary>
    public static async Task<byte[]> GetModelInfoAsync(GrpcChannel channel, byte[] request)
    {
        using var call = channel.CreateCallInvoker().AsyncUnaryCall(GetModelInfo, null, new CallOptions(), request);
        return await call.ResponseAsync;
    }
}
