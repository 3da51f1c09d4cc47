using Grpc.Core;

namespace VqDiffusion.Server.Services;

/// <summary>
/// Who a call comes from, for the per-caller limits (<c>Generation:MaxQueuedPerCaller</c>,
/// <c>Generation:MaxActivePerCaller</c>). Today the peer's address (<see cref="PeerCallerIdentity"/>); an
/// authenticating host registers one that returns the API key's identity instead.
/// </summary>
public interface ICallerIdentity
{
    /// <summary>A stable key for the caller of <paramref name="context"/>; calls with the same key share the limits.</summary>
    string CallerOf(ServerCallContext context);
}
