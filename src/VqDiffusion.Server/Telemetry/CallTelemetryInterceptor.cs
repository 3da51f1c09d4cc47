using Grpc.Core;
using Grpc.Core.Interceptors;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// The outermost interceptor: times nothing itself, but opens each VqDiffusion call's span and, when the handler
/// has finished, counts the call under its final status code (<c>vqd_requests_total{method,code}</c>) and closes
/// the spans of its job.
/// </summary>
public sealed class CallTelemetryInterceptor : Interceptor
{
    private readonly GenerationTelemetry _telemetry;

    public CallTelemetryInterceptor(GenerationTelemetry telemetry)
    {
        _telemetry = telemetry;
    }

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        CallTelemetry? call = _telemetry.StartCall(context);
        if (call is null)
        {
            return await continuation(request, context).ConfigureAwait(false);
        }

        try
        {
            TResponse response = await continuation(request, context).ConfigureAwait(false);
            _telemetry.EndCall(call, context, null);
            return response;
        }
        catch (Exception ex)
        {
            _telemetry.EndCall(call, context, ex);
            throw;
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        CallTelemetry? call = _telemetry.StartCall(context);
        if (call is null)
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
            return;
        }

        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
            _telemetry.EndCall(call, context, null);
        }
        catch (Exception ex)
        {
            _telemetry.EndCall(call, context, ex);
            throw;
        }
    }
}
