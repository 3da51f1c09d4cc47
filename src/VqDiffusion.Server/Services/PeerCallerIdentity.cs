using Grpc.Core;

namespace VqDiffusion.Server.Services;

/// <summary>
/// The caller is the peer's IP address without its port (<c>ipv4:10.0.0.7:51234</c> → <c>10.0.0.7</c>), so all
/// connections from one host share the limits. Behind a proxy every call has the proxy's address.
/// </summary>
public sealed class PeerCallerIdentity : ICallerIdentity
{
    public string CallerOf(ServerCallContext context) => HostOf(context.Peer);

    /// <summary>The host part of a gRPC peer string (<c>ipv4:host:port</c>, <c>ipv6:[addr]:port</c>, <c>unix:path</c>).</summary>
    public static string HostOf(string? peer)
    {
        if (string.IsNullOrEmpty(peer))
        {
            return "unknown";
        }

        string address = peer;
        int scheme = peer.IndexOf(':', StringComparison.Ordinal);
        if (scheme > 0 && peer[..scheme] is "ipv4" or "ipv6")
        {
            address = peer[(scheme + 1)..];
            if (address.StartsWith('['))
            {
                int close = address.IndexOf(']', StringComparison.Ordinal);
                return close > 0 ? address[..(close + 1)] : address;
            }

            int port = address.LastIndexOf(':');
            return port > 0 ? address[..port] : address;
        }

        return address;
    }
}
