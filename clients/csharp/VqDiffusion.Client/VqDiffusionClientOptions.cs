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
    /// Changes the channel options after the client's defaults are set (receive limit
    /// <see cref="VqDiffusionClient.DefaultMaxReceiveMessageSize"/>; for balanced targets insecure credentials, the
    /// round-robin policy and the resolver). Set <c>Credentials = ChannelCredentials.SecureSsl</c> here for a TLS
    /// <c>dns:///</c> target.
    /// </summary>
    public Action<GrpcChannelOptions>? ConfigureChannel { get; set; }
}
