namespace VqDiffusion.Server.Auth;

/// <summary>The authentication scheme names this server registers.</summary>
public static class AuthSchemes
{
    /// <summary>The scheme calls are authenticated with: forwards to <see cref="ApiKey"/> or <see cref="Jwt"/>.</summary>
    public const string Default = "vqd";

    /// <summary>API keys of <c>Auth:ApiKeys</c> / <c>Auth:ApiKeysFile</c>.</summary>
    public const string ApiKey = "ApiKey";

    /// <summary>JWT bearer tokens (ASP.NET Core JwtBearer) configured by <c>Auth:Jwt</c>.</summary>
    public const string Jwt = "Bearer";

    /// <summary>Claim type of the caller's name in every principal this server makes.</summary>
    public const string CallerClaim = "vqd:caller";
}
