using Google.Rpc;
using Grpc.Core;

namespace VqDiffusion.Client;

/// <summary>A field the server rejected, from the <c>google.rpc.BadRequest</c> details of the status.</summary>
/// <param name="Field">The request field as the API spells it (<c>truncation_rate</c>, <c>prompts[1]</c>).</param>
/// <param name="Description">Why it was rejected.</param>
public sealed record FieldViolation(string Field, string Description);

/// <summary>A call failed with a gRPC status; the <see cref="RpcException"/> is the <see cref="Exception.InnerException"/>.</summary>
public sealed class VqDiffusionException : Exception
{
    public VqDiffusionException(RpcException inner)
        : base(FormatMessage(inner), inner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        StatusCode = inner.StatusCode;
        Detail = inner.Status.Detail;
        FieldViolations = ParseViolations(inner);
    }

    /// <summary>The gRPC status code (INVALID_ARGUMENT, UNAVAILABLE, RESOURCE_EXHAUSTED ...).</summary>
    public StatusCode StatusCode { get; }

    /// <summary>The status message of the server.</summary>
    public string Detail { get; }

    /// <summary>The rejected fields (for INVALID_ARGUMENT); empty when the status has none.</summary>
    public IReadOnlyList<FieldViolation> FieldViolations { get; }

    private static string FormatMessage(RpcException inner) =>
        string.IsNullOrEmpty(inner?.Status.Detail) ? $"{inner?.StatusCode}" : $"{inner.StatusCode}: {inner.Status.Detail}";

    private static FieldViolation[] ParseViolations(RpcException inner)
    {
        Google.Rpc.Status? status;
        try
        {
            status = inner.GetRpcStatus();
        }
        catch (Google.Protobuf.InvalidProtocolBufferException)
        {
            return [];
        }

        BadRequest? badRequest = status?.GetDetail<BadRequest>();
        return badRequest is null
            ? []
            : badRequest.FieldViolations.Select(v => new FieldViolation(v.Field, v.Description)).ToArray();
    }
}
