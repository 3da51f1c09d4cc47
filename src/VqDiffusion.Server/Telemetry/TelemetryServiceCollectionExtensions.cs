using Grpc.AspNetCore.Server;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Telemetry;

/// <summary>Registers the server's metrics and traces (README, "Metrics and traces").</summary>
public static class TelemetryServiceCollectionExtensions
{
    /// <summary>
    /// The instruments and spans are always recorded (cheap without a listener); <c>Metrics:Port</c> adds the
    /// OpenTelemetry metrics pipeline and the Prometheus scrape endpoint, <c>Tracing:OtlpEndpoint</c> the trace
    /// pipeline with an OTLP exporter. Call after <c>AddGrpc</c>.
    /// </summary>
    public static WebApplicationBuilder AddServerTelemetry(this WebApplicationBuilder builder)
    {
        IServiceCollection services = builder.Services;
        var metrics = builder.Configuration.GetSection(MetricsOptions.Section).Get<MetricsOptions>() ?? new MetricsOptions();
        var tracing = builder.Configuration.GetSection(TracingOptions.Section).Get<TracingOptions>() ?? new TracingOptions();
        services.Configure<MetricsOptions>(builder.Configuration.GetSection(MetricsOptions.Section));
        services.Configure<TracingOptions>(builder.Configuration.GetSection(TracingOptions.Section));

        services.AddSingleton<ServerMetrics>();
        services.AddSingleton<GenerationTelemetry>();
        services.Configure<GrpcServiceOptions>(o =>
        {
            // Outermost, so that it sees the status that other interceptors finally map an error to.
            o.Interceptors.Add<CallTelemetryInterceptor>();
            InterceptorRegistration registration = o.Interceptors[^1];
            o.Interceptors.RemoveAt(o.Interceptors.Count - 1);
            o.Interceptors.Insert(0, registration);
        });

        bool exportMetrics = metrics.Port is not null;
        bool exportTraces = !string.IsNullOrWhiteSpace(tracing.OtlpEndpoint);
        if (!exportMetrics && !exportTraces)
        {
            return builder;
        }

        OpenTelemetryBuilder otel = services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(tracing.ServiceName, serviceVersion: VqDiffusionGrpcService.ServerVersion));
        if (exportMetrics)
        {
            if (metrics.Port is < 0 or > 65535)
            {
                throw new InvalidOperationException($"Metrics:Port must be a TCP port (0 = any free one), not {metrics.Port}.");
            }

            otel.WithMetrics(m =>
            {
                m.AddMeter(ServerMetrics.MeterName);

                // Meters are matched by name across the process; keep only this host's (several hosts share a test
                // process, each with its own IMeterFactory, which is the scope of the meters it creates).
                ((IDeferredMeterProviderBuilder)m).Configure((sp, b) =>
                {
                    var factory = sp.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
                    b.AddView(instrument => instrument.Meter.Scope is System.Diagnostics.Metrics.IMeterFactory scope && !ReferenceEquals(scope, factory)
                        ? MetricStreamConfiguration.Drop
                        : null);
                });
                m.AddPrometheusExporter();
            });
            services.AddSingleton<MetricsServer>();
            services.AddHostedService(sp => sp.GetRequiredService<MetricsServer>());
        }

        if (exportTraces)
        {
            var endpoint = new Uri(tracing.OtlpEndpoint!, UriKind.Absolute);
            OtlpExportProtocol protocol = tracing.OtlpProtocol?.Trim().ToLowerInvariant() switch
            {
                null or "" or "grpc" => OtlpExportProtocol.Grpc,
                "http/protobuf" or "http" => OtlpExportProtocol.HttpProtobuf,
                _ => throw new InvalidOperationException($"Tracing:OtlpProtocol must be grpc or http/protobuf, not '{tracing.OtlpProtocol}'."),
            };
            otel.WithTracing(t => t
                .AddSource(ServerTracing.SourceName)
                .AddAspNetCoreInstrumentation(o => o.Filter = context => !context.Request.Path.StartsWithSegments("/grpc.health.v1.Health", StringComparison.Ordinal))
                .AddOtlpExporter(o =>
                {
                    o.Protocol = protocol;
                    // With http/protobuf a bare collector address gets the standard path.
                    o.Endpoint = protocol == OtlpExportProtocol.HttpProtobuf && endpoint.AbsolutePath == "/" ? new Uri(endpoint, "v1/traces") : endpoint;
                }));
        }

        return builder;
    }
}
