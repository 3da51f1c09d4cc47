namespace VqDiffusion.Server.Options;

/// <summary>Configuration section <c>Server</c>: how this replica identifies itself.</summary>
public sealed class ServerOptions
{
    public const string Section = "Server";

    /// <summary>The response header (on every call, also on errors) that carries <see cref="InstanceId"/>.</summary>
    public const string InstanceIdHeader = "vqd-instance-id";

    /// <summary>
    /// This replica's name (e.g. the Kubernetes pod name), sent in the <c>vqd-instance-id</c> response header so a
    /// client behind a load balancer can tell which replica served it. Empty = no header.
    /// </summary>
    public string? InstanceId { get; set; }
}
