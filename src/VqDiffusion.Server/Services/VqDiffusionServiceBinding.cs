using Grpc.Core;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Server.Services;

/// <summary>
/// How <see cref="VqDiffusionGrpcService"/> is bound (its <c>[BindServiceMethod]</c>): the generated binding, with
/// every request marshaller wrapped by <see cref="DecodingServiceBinder"/>, so that a request that is not valid
/// protobuf (or has invalid UTF-8 in a string field) becomes INVALID_ARGUMENT instead of UNKNOWN and a stack trace
/// in the log. <see cref="Descriptor"/> is what server reflection reads from the bind type.
/// </summary>
internal static class VqDiffusionServiceBinding
{
    public static Google.Protobuf.Reflection.ServiceDescriptor Descriptor => VqDiffusionService.Descriptor;

    /// <summary>Called by grpc-dotnet's service discovery with its binder; the service instance is null there.</summary>
    public static void BindService(ServiceBinderBase serviceBinder, VqDiffusionService.VqDiffusionServiceBase serviceImpl) =>
        VqDiffusionService.BindService(new DecodingServiceBinder(serviceBinder), serviceImpl);
}
