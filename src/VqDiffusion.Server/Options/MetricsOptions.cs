namespace VqDiffusion.Server.Options;

/// <summary>Configuration section <c>Metrics</c>: the Prometheus scrape endpoint, on a port of its own.</summary>
public sealed class MetricsOptions
{
    public const string Section = "Metrics";

    /// <summary>Port of the HTTP/1.1 listener that serves <c>GET /metrics</c>; unset = no metrics endpoint; 0 = any free port.</summary>
    public int? Port { get; set; }

    /// <summary>Address the listener binds: empty or <c>*</c> = every interface, <c>localhost</c>, or an IP address.</summary>
    public string? Host { get; set; }
}
