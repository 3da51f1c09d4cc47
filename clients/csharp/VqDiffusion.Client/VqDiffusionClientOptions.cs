using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;

namespace VqDiffusion.Client;

/// <summary>Options of the channels <see cref="VqDiffusionClient"/> creates, and its retries.</summary>
public sealed class VqDiffusionClientOptions
{
    /// <summary>Retries of UNAVAILABLE / RESOURCE_EXHAUSTED; <see cref="VqDiffusionRetryOptions.None"/> turns them off.</summary>
    public VqDiffusionRetryOptions Retry { get; set; } = new();

    /// <summary>
    /// How often a <c>dns:///host:port</c> target is resolved again, so replicas added behind a headless Service are
    /// used (they are also re-resolved after a connection fails). Default 30 s.
    /// </summary>
    public TimeSpan DnsRefreshInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// An API key of the server (<c>Auth:ApiKeys</c>) or a JWT, sent as <c>authorization: Bearer KEY</c> on every call;
    /// null = none. Printable ASCII without spaces. Over plain http:// it travels unencrypted: use https:// beyond a
    /// trusted network.
    /// </summary>
    public string? ApiKey { get; set; }

    /// <summary>
    /// Certificates to trust as roots for an https:// server (a private CA, or a self-signed server certificate)
    /// instead of the system's; the server's name is still checked. Null = the system's roots.
    /// </summary>
    public X509Certificate2Collection? RootCertificates { get; set; }

    /// <summary>
    /// Changes the channel options after the client's defaults are set (receive limit
    /// <see cref="VqDiffusionClient.DefaultMaxReceiveMessageSize"/>; for balanced targets insecure credentials, the
    /// round-robin policy and the resolver). Set <c>Credentials = ChannelCredentials.SecureSsl</c> here for a TLS
    /// <c>dns:///</c> target.
    /// </summary>
    public Action<GrpcChannelOptions>? ConfigureChannel { get; set; }
}
