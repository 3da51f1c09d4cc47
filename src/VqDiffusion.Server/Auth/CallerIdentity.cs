using Grpc.Core;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Auth;

/// <summary>
/// The caller of an authenticated call is its credential's name (<c>key:NAME</c> for an API key, <c>jwt:SUBJECT</c> for a
/// token), so the per-caller limits follow the key or the user, also behind a proxy; an anonymous call (auth off, or
/// health and reflection) is its peer's host (<see cref="PeerCallerIdentity"/>).
/// </summary>
public sealed class CallerIdentity : ICallerIdentity
{
    public string CallerOf(ServerCallContext context)
    {
        string? name = context.GetHttpContext().User.FindFirst(AuthSchemes.CallerClaim)?.Value;
        return name ?? PeerCallerIdentity.HostOf(context.Peer);
    }
}
