namespace VqDiffusion.Server.Options;

/// <summary>Configuration section <c>Tracing</c>: where the OpenTelemetry trace exporter sends spans.</summary>
public sealed class TracingOptions
{
    public const string Section = "Tracing";

    /// <summary>OTLP collector endpoint (e.g. <c>http://otel-collector:4317</c>); unset = no trace export.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary><c>grpc</c> (default, port 4317) or <c>http/protobuf</c> (port 4318, spans POSTed to <c>/v1/traces</c>).</summary>
    public string? OtlpProtocol { get; set; }

    /// <summary>The <c>service.name</c> resource attribute of exported spans.</summary>
    public string ServiceName { get; set; } = "vqdiffusion-grpc";
}
