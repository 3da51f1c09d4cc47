using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Auth;

/// <summary>
/// When <c>Auth</c> is on, every call but health (and reflection, unless <c>Auth:RequireForReflection</c>) must carry
/// valid credentials, or it ends with UNAUTHENTICATED before its request is looked at. The authenticated principal
/// becomes the call's user (<see cref="CallerIdentity"/> names the caller after it). Rejections are logged with the
/// reason and the peer, never the credential.
/// </summary>
public sealed class AuthInterceptor(IOptions<AuthOptions> options, ILogger<AuthInterceptor> logger) : Interceptor
{
    private readonly AuthOptions _options = options.Value;

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        await AuthenticateAsync(context).ConfigureAwait(false);
        return await continuation(request, context).ConfigureAwait(false);
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        await AuthenticateAsync(context).ConfigureAwait(false);
        await continuation(request, responseStream, context).ConfigureAwait(false);
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        await AuthenticateAsync(context).ConfigureAwait(false);
        return await continuation(requestStream, context).ConfigureAwait(false);
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        await AuthenticateAsync(context).ConfigureAwait(false);
        await continuation(requestStream, responseStream, context).ConfigureAwait(false);
    }

    /// <summary>Whether calls of <paramref name="method"/> (<c>/package.Service/Method</c>) need credentials.</summary>
    private bool Requires(string method)
    {
        if (!_options.Enabled || method.StartsWith("/grpc.health.v1.Health/", StringComparison.Ordinal))
        {
            return false;
        }

        return _options.RequireForReflection || !method.StartsWith("/grpc.reflection.", StringComparison.Ordinal);
    }

    private async Task AuthenticateAsync(ServerCallContext context)
    {
        if (!Requires(context.Method))
        {
            return;
        }

        HttpContext http = context.GetHttpContext();
        AuthenticateResult result = await http.AuthenticateAsync(AuthSchemes.Default).ConfigureAwait(false);
        if (result.Succeeded)
        {
            http.User = result.Principal;
            return;
        }

        string reason = result.None || result.Failure is null
            ? "no credentials: send the metadata 'authorization: Bearer <API key or token>'"
            : Describe(result.Failure);
        logger.LogInformation("Rejected {Method} from {Peer} with UNAUTHENTICATED: {Reason}", context.Method, context.Peer, reason);
        throw new RpcException(new Status(StatusCode.Unauthenticated, reason));
    }

    /// <summary>A short reason for a failed authentication, without the token or key.</summary>
    private static string Describe(Exception failure) => failure switch
    {
        SecurityTokenExpiredException => "the token has expired",
        SecurityTokenNotYetValidException => "the token is not valid yet",
        SecurityTokenInvalidAudienceException => "the token is not for this audience",
        SecurityTokenInvalidIssuerException => "the token's issuer is not trusted",
        SecurityTokenSignatureKeyNotFoundException or SecurityTokenInvalidSignatureException => "the token's signature is not valid",
        SecurityTokenMalformedException or ArgumentException => "the token is malformed", // IDX14100-series: not a JWS
        SecurityTokenException => "the token is not valid",
        AuthenticationFailureException => failure.Message, // the API key handler's and the token checks' own reasons
        _ => "the credentials are not valid",
    };
}
