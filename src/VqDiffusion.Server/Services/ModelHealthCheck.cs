using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace VqDiffusion.Server.Services;

/// <summary>
/// Healthy (SERVING) only once the model is loaded and while the server is not shutting down. A failure's details
/// are in the server log (once, from <see cref="ModelHost"/>), not here.
/// </summary>
public sealed class ModelHealthCheck : IHealthCheck
{
    private readonly ModelHost _host;
    private readonly ServerShutdown _shutdown;

    public ModelHealthCheck(ModelHost host, ServerShutdown shutdown)
    {
        _host = host;
        _shutdown = shutdown;
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_shutdown.IsStopping ? HealthCheckResult.Unhealthy("the server is shutting down")
            : _host.State switch
            {
                ModelState.Ready => HealthCheckResult.Healthy("model loaded"),
                ModelState.Loading => HealthCheckResult.Unhealthy("model is loading"),
                _ => HealthCheckResult.Unhealthy(ModelHost.FailedMessage),
            });
}
