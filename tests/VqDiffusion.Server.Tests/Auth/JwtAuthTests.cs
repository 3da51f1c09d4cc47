using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using static VqDiffusion.Server.Tests.Auth.ApiKeyAuthTests;

namespace VqDiffusion.Server.Tests.Auth;

/// <summary>JWT bearer validation (<c>Auth:Jwt</c>) on the real server: a shared secret, a PEM public key, an OpenID authority.</summary>
public sealed class JwtAuthTests
{
    private const string Issuer = "https://issuer.test";
    private const string Audience = "vqdiffusion";
    private const string Secret = "a-shared-hmac-secret-of-32-bytes-or-more!";
    private const string ApiKey = "k3y-for-the-ci-0123456789";

    [Fact]
    public async Task TokensSignedWithTheSharedSecretAreCheckedForSignatureLifetimeAudienceAndIssuer()
    {
        var key = new SymmetricSecurityKey(Encoding.UTF8.GetBytes(Secret));
        var signing = new SigningCredentials(key, SecurityAlgorithms.HmacSha256);
        await using var server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", $"--Auth:Jwt:Issuer={Issuer}", $"--Auth:Jwt:Audience={Audience}", $"--Auth:Jwt:SigningKey={Secret}", $"--Auth:ApiKeys:ci={ApiKey}"]);

        Assert.Equal("OK", await OutcomeAsync(server, Token(signing)));
        Assert.Equal("OK", await OutcomeAsync(server, ApiKey)); // API keys and tokens side by side

        await AssertRejectedAsync(server, Token(signing, expires: DateTime.UtcNow.AddMinutes(-5)), "the token has expired");
        await AssertRejectedAsync(server, Token(signing, audience: "someone-else"), "the token is not for this audience");
        await AssertRejectedAsync(server, Token(signing, issuer: "https://elsewhere.test"), "the token's issuer is not trusted");
        var otherKey = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes("another-secret-of-thirty-two-bytes-or-more")), SecurityAlgorithms.HmacSha256);
        await AssertRejectedAsync(server, Token(otherKey), "the token's signature is not valid");
        await AssertRejectedAsync(server, Token(signing, subject: null), "the token has no 'sub' claim (Auth:Jwt:NameClaim)");
        await AssertRejectedAsync(server, "a.b.c", "the token is malformed");
    }

    [Fact]
    public async Task TokensAreCheckedAgainstAPemPublicKey()
    {
        using var rsa = RSA.Create(2048);
        string dir = Directory.CreateTempSubdirectory("vqd-jwt-").FullName;
        try
        {
            string pem = Path.Combine(dir, "issuer.pub.pem");
            await File.WriteAllTextAsync(pem, rsa.ExportSubjectPublicKeyInfoPem());
            await using var server = await RunningServer.StartAsync(
                [$"--Model:Path={Fixtures.TinyModel}", $"--Auth:Jwt:Issuer={Issuer}", $"--Auth:Jwt:Audience={Audience}", $"--Auth:Jwt:SigningKeyFile={pem}"]);
            var signing = new SigningCredentials(new RsaSecurityKey(rsa), SecurityAlgorithms.RsaSha256);
            Assert.Equal("OK", await OutcomeAsync(server, Token(signing)));

            using var other = RSA.Create(2048);
            await AssertRejectedAsync(server, Token(new SigningCredentials(new RsaSecurityKey(other), SecurityAlgorithms.RsaSha256)), "the token's signature is not valid");

            // Only tokens go to JWT validation when no API keys are configured: a key-like credential is a malformed token.
            await AssertRejectedAsync(server, ApiKey, "the token is malformed");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task KeysAndIssuerComeFromAnOpenIdAuthority()
    {
        using var rsa = RSA.Create(2048);
        await using WebApplication authority = await StartAuthorityAsync(rsa);
        string url = authority.Urls.Single();
        var logs = new CapturedLogs();
        await using var server = await RunningServer.StartAsync(
            [$"--Model:Path={Fixtures.TinyModel}", $"--Auth:Jwt:Authority={url}", $"--Auth:Jwt:Audience={Audience}", "--Logging:LogLevel:Microsoft.AspNetCore.Authentication=Debug"],
            configure: s => s.AddSingleton<ILoggerProvider>(logs));
        var signing = new SigningCredentials(new RsaSecurityKey(rsa) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256);
        string accepted = await OutcomeAsync(server, Token(signing, issuer: url));
        Assert.True(accepted == "OK", accepted + "\n" + string.Join("\n", logs.Entries.Where(e => e.Category.StartsWith("Microsoft.AspNetCore.Authentication", StringComparison.Ordinal)).Select(e => $"{e.Category}: {e.Message} {e.Exception}")));
        await AssertRejectedAsync(server, Token(signing, issuer: Issuer), "the token's issuer is not trusted");
    }

    private static string Token(SigningCredentials signing, string issuer = Issuer, string audience = Audience, DateTime? expires = null, string? subject = "user-7")
    {
        DateTime exp = expires ?? DateTime.UtcNow.AddMinutes(10);
        var claims = new Dictionary<string, object>();
        if (subject is not null)
        {
            claims["sub"] = subject;
        }

        return new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = issuer,
            Audience = audience,
            Claims = claims,
            NotBefore = exp.AddMinutes(-20),
            IssuedAt = exp.AddMinutes(-20),
            Expires = exp,
            SigningCredentials = signing,
        });
    }

    private static async Task AssertRejectedAsync(RunningServer server, string credential, string detail) =>
        Assert.Equal($"Unauthenticated: {detail}", await OutcomeAsync(server, credential));

    /// <summary>A minimal OpenID Connect discovery document and JWKS on loopback, as an identity provider publishes them.</summary>
    private static async Task<WebApplication> StartAuthorityAsync(RSA rsa)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        // HTTP/1.1, as identity providers serve it (this test folder's appsettings.json makes Kestrel's default HTTP/2-only).
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http1));
        builder.Logging.ClearProviders();
        WebApplication app = builder.Build();
        RSAParameters p = rsa.ExportParameters(includePrivateParameters: false);
        app.MapGet("/.well-known/openid-configuration", (HttpContext context) =>
        {
            string self = $"{context.Request.Scheme}://{context.Request.Host}";
            return Results.Json(new Dictionary<string, object> { ["issuer"] = self, ["jwks_uri"] = self + "/jwks" });
        });
        app.MapGet("/jwks", () => Results.Text(JsonSerializer.Serialize(new
        {
            keys = new[] { new { kty = "RSA", use = "sig", alg = "RS256", kid = "k1", n = Base64UrlEncoder.Encode(p.Modulus), e = Base64UrlEncoder.Encode(p.Exponent) } },
        }), "application/json"));
        await app.StartAsync();
        return app;
    }
}
