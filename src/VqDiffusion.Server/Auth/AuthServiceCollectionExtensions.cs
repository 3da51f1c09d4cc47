using System.Security.Claims;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Auth;

/// <summary>Registers the <c>Auth</c> section: API keys, JWT bearer validation and the interceptor that enforces them.</summary>
public static class AuthServiceCollectionExtensions
{
    public static WebApplicationBuilder AddServerAuth(this WebApplicationBuilder builder)
    {
        IServiceCollection services = builder.Services;
        services.AddOptions<AuthOptions>().Bind(builder.Configuration.GetSection(AuthOptions.Section)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<AuthOptions>, AuthOptionsValidator>();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<ApiKeyStore>();
        services.TryAddSingleton<ICallerIdentity, CallerIdentity>();

        services.AddAuthentication(AuthSchemes.Default)
            .AddPolicyScheme(AuthSchemes.Default, "API key or JWT", o => o.ForwardDefaultSelector = SelectScheme)
            .AddScheme<AuthenticationSchemeOptions, ApiKeyAuthenticationHandler>(AuthSchemes.ApiKey, _ => { })
            .AddJwtBearer(AuthSchemes.Jwt);
        services.AddOptions<JwtBearerOptions>(AuthSchemes.Jwt).Configure<IOptions<AuthOptions>>((jwt, auth) => ConfigureJwt(jwt, auth.Value.Jwt));
        return builder;
    }

    /// <summary>A JWT-shaped credential goes to JwtBearer when it is configured; anything else is an API key.</summary>
    private static string SelectScheme(HttpContext context)
    {
        AuthOptions auth = context.RequestServices.GetRequiredService<IOptions<AuthOptions>>().Value;
        if (!auth.Jwt.Enabled)
        {
            return AuthSchemes.ApiKey;
        }

        if (!auth.ApiKeysEnabled)
        {
            return AuthSchemes.Jwt;
        }

        return BearerCredential.TryRead(context.Request.Headers.Authorization, out string? credential, out _) && BearerCredential.LooksLikeJwt(credential!)
            ? AuthSchemes.Jwt
            : AuthSchemes.ApiKey;
    }

    private static void ConfigureJwt(JwtBearerOptions jwt, JwtOptions options)
    {
        if (!options.Enabled)
        {
            return;
        }

        jwt.MapInboundClaims = false; // "sub" stays "sub"
        jwt.SaveToken = false;
        jwt.IncludeErrorDetails = false;
        if (!string.IsNullOrWhiteSpace(options.Authority))
        {
            jwt.Authority = options.Authority;
            jwt.RequireHttpsMetadata = new Uri(options.Authority).Scheme == Uri.UriSchemeHttps;
        }

        jwt.TokenValidationParameters = new TokenValidationParameters
        {
            ValidateAudience = true,
            ValidAudience = options.Audience,
            ValidateIssuer = true,
            ValidIssuer = string.IsNullOrWhiteSpace(options.Issuer) ? null : options.Issuer,
            ValidateLifetime = true,
            RequireExpirationTime = true,
            ClockSkew = options.ClockSkew,
            NameClaimType = options.NameClaim,
        };
        if (string.IsNullOrWhiteSpace(options.Authority))
        {
            jwt.TokenValidationParameters.IssuerSigningKeys = SigningKeys.Load(options, []);
            jwt.TokenValidationParameters.ValidateIssuerSigningKey = true;
        }

        jwt.Events = new JwtBearerEvents
        {
            OnTokenValidated = context =>
            {
                string? name = context.Principal?.FindFirst(options.NameClaim)?.Value;
                if (string.IsNullOrEmpty(name))
                {
                    context.Fail($"the token has no '{options.NameClaim}' claim (Auth:Jwt:NameClaim)");
                    return Task.CompletedTask;
                }

                context.Principal!.AddIdentity(new ClaimsIdentity([new Claim(AuthSchemes.CallerClaim, "jwt:" + name)]));
                return Task.CompletedTask;
            },
        };
    }
}
