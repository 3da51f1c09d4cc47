namespace VqDiffusion.Server.Options;

/// <summary>
/// Configuration section <c>Auth</c>: who may call Generate and GetModelInfo. Off when no API key and no JWT
/// validation is configured; when on, a call without valid credentials (gRPC metadata
/// <c>authorization: Bearer CREDENTIAL</c>, an API key or a JWT) gets UNAUTHENTICATED. Health always stays open,
/// reflection unless <see cref="RequireForReflection"/>.
/// </summary>
public sealed class AuthOptions
{
    public const string Section = "Auth";

    /// <summary>Shortest API key accepted (characters): a key is a secret, not a password to remember.</summary>
    public const int MinimumKeyLength = 16;

    /// <summary>
    /// API keys by name (<c>Auth:ApiKeys:ci=KEY</c>, <c>VQD_Auth__ApiKeys__ci=KEY</c>). The name identifies the caller in
    /// logs, traces and the per-caller limits; the key itself is never logged.
    /// </summary>
    public Dictionary<string, string> ApiKeys { get; set; } = new(StringComparer.Ordinal);

    /// <summary>
    /// A file of API keys, one <c>name:key</c> per line (<c>#</c> starts a comment line). It is read at start and read
    /// again when it changes (checked at most every <see cref="KeysFileRecheckInterval"/>), so keys can be rotated
    /// without a restart; a changed file that does not parse keeps the keys read before (a warning names the line).
    /// </summary>
    public string? ApiKeysFile { get; set; }

    /// <summary>Whether gRPC reflection also needs credentials. Default false: reflection stays open, like health.</summary>
    public bool RequireForReflection { get; set; }

    /// <summary>JWT bearer validation (ASP.NET Core JwtBearer): on when an authority or a signing key is set.</summary>
    public JwtOptions Jwt { get; set; } = new();

    /// <summary>How often at most <see cref="ApiKeysFile"/> is checked for changes.</summary>
    public static TimeSpan KeysFileRecheckInterval => TimeSpan.FromSeconds(2);

    /// <summary>True when any API key source is configured.</summary>
    public bool ApiKeysEnabled => ApiKeys.Count > 0 || !string.IsNullOrWhiteSpace(ApiKeysFile);

    /// <summary>True when callers must authenticate.</summary>
    public bool Enabled => ApiKeysEnabled || Jwt.Enabled;
}

/// <summary>Configuration section <c>Auth:Jwt</c>.</summary>
public sealed class JwtOptions
{
    /// <summary>
    /// The token issuer's OpenID Connect authority (<c>https://login.example.com/realms/x</c>): signing keys and the
    /// issuer come from its <c>.well-known/openid-configuration</c>. Plain <c>http://</c> only for a loopback authority.
    /// </summary>
    public string? Authority { get; set; }

    /// <summary>The audience tokens must name (<c>aud</c>). Required.</summary>
    public string? Audience { get; set; }

    /// <summary>The issuer tokens must name (<c>iss</c>); required without <see cref="Authority"/>.</summary>
    public string? Issuer { get; set; }

    /// <summary>A shared HMAC secret (HS256/384/512), at least 32 bytes of UTF-8, instead of an authority.</summary>
    public string? SigningKey { get; set; }

    /// <summary>A PEM file with the issuer's public key (RSA or EC, <c>PUBLIC KEY</c> or <c>CERTIFICATE</c>), instead of an authority.</summary>
    public string? SigningKeyFile { get; set; }

    /// <summary>The claim that names the caller (logs, per-caller limits). Default <c>sub</c>.</summary>
    public string NameClaim { get; set; } = "sub";

    /// <summary>Allowed clock difference for <c>exp</c>/<c>nbf</c>. Default 1 minute.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>True when JWT validation is configured.</summary>
    public bool Enabled =>
        !string.IsNullOrWhiteSpace(Authority) || !string.IsNullOrWhiteSpace(SigningKey) || !string.IsNullOrWhiteSpace(SigningKeyFile);
}
