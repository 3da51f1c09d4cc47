using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace VqDiffusion.Server.Auth;

/// <summary>
/// Authenticates <c>authorization: Bearer KEY</c> against <see cref="ApiKeyStore"/>. The principal is named after the
/// key (<c>key:NAME</c>), never the key itself.
/// </summary>
public sealed class ApiKeyAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory logger,
    UrlEncoder encoder,
    ApiKeyStore keys)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (!BearerCredential.TryRead(Request.Headers.Authorization, out string? credential, out string? problem))
        {
            return Task.FromResult(problem is null ? AuthenticateResult.NoResult() : AuthenticateResult.Fail(problem));
        }

        string? name = keys.NameOf(credential!);
        if (name is null)
        {
            return Task.FromResult(AuthenticateResult.Fail("the API key is not valid"));
        }

        var identity = new ClaimsIdentity(
            [new Claim(ClaimTypes.Name, name), new Claim(AuthSchemes.CallerClaim, "key:" + name)],
            AuthSchemes.ApiKey, ClaimTypes.Name, ClaimTypes.Role);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), AuthSchemes.ApiKey)));
    }
}
