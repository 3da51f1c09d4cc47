using Grpc.Core;
using Grpc.Core.Interceptors;
using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Services;

/// <summary>
/// Every call's failures as clear statuses, in one place: a request that could not be decoded
/// (<see cref="UndecodableRequests"/>) gets INVALID_ARGUMENT before the handler runs; an exception that escapes a
/// handler gets RESOURCE_EXHAUSTED when it is an out-of-memory failure, UNAVAILABLE when the server cancelled it (it
/// is stopping), otherwise INTERNAL, with the request id and never the exception's text (paths, native stack
/// traces), which is logged once with the request id. An <see cref="RpcException"/> (the handlers' own statuses)
/// and the cancellation of a call by its client pass through.
/// </summary>
public sealed class StatusInterceptor(ILogger<StatusInterceptor> logger) : Interceptor
{
    private const string RequestIdKey = "vqd.request_id";

    /// <summary>Names the call's request id for the statuses and logs of this interceptor.</summary>
    public static void SetRequestId(ServerCallContext context, string requestId) => context.UserState[RequestIdKey] = requestId;

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        RejectUndecodable(request, context);
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            RpcException? status = Map(ex, context);
            if (status is null)
            {
                throw;
            }

            throw status;
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        RejectUndecodable(request, context);
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            RpcException? status = Map(ex, context);
            if (status is null)
            {
                throw;
            }

            throw status;
        }
    }

    private void RejectUndecodable(object request, ServerCallContext context)
    {
        if (UndecodableRequests.TryGetReason(request, out string reason))
        {
            logger.LogWarning("Rejected an undecodable {Method} request from {Peer}: {Reason}", context.Method, context.Peer, reason);
            throw new RpcException(new Status(StatusCode.InvalidArgument, reason));
        }
    }

    /// <summary>The status for an exception that escaped a handler; null to let it through unchanged.</summary>
    private RpcException? Map(Exception ex, ServerCallContext context)
    {
        if (ex is RpcException || (ex is OperationCanceledException or IOException && context.CancellationToken.IsCancellationRequested))
        {
            return null;
        }

        // The handler names the request id once it has one; before that (or for other methods) the log line and the
        // status share a fresh one.
        string requestId = context.UserState.TryGetValue(RequestIdKey, out object? id) && id is string s ? s : Guid.NewGuid().ToString("N")[..16];
        if (ex is OperationCanceledException)
        {
            // Not the client's cancellation: the server stopped the request (it is shutting down).
            logger.LogInformation("Request {RequestId} ({Method}) was stopped by the server: {Reason}", requestId, context.Method, ex.Message);
            return new RpcException(new Status(StatusCode.Unavailable, $"the server stopped request {requestId} before it finished; retry"));
        }

        if (OutOfMemoryFailures.IsOutOfMemory(ex))
        {
            logger.LogError(ex, "Request {RequestId} ({Method}) ran out of memory", requestId, context.Method);
            return new RpcException(new Status(StatusCode.ResourceExhausted, $"the server ran out of memory serving request {requestId}; retry later, or with fewer images per request"));
        }

        logger.LogError(ex, "Request {RequestId} ({Method}) failed in the server", requestId, context.Method);
        return new RpcException(new Status(StatusCode.Internal, $"internal error serving request {requestId}; see the server log"));
    }
}
