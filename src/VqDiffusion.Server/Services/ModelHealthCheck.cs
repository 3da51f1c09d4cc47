using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace VqDiffusion.Server.Services;

/// <summary>Healthy (SERVING) only once the model is loaded.</summary>
public sealed class ModelHealthCheck : IHealthCheck
{
    private readonly ModelHost _host;

    public ModelHealthCheck(ModelHost host) => _host = host;

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_host.State switch
        {
            ModelState.Ready => HealthCheckResult.Healthy("model loaded"),
            ModelState.Loading => HealthCheckResult.Unhealthy("model is loading"),
            _ => HealthCheckResult.Unhealthy("model failed to load: " + _host.FailureReason),
        });
}
