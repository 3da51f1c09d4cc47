using System.Security.Claims;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using VqDiffusion.Server.Auth;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.Auth;

/// <summary>The <c>Auth</c> checks at start (never quoting a secret), the bearer header rules and the caller's name.</summary>
public sealed class AuthOptionsValidatorTests
{
    private const string Secret = "s3cr3t-value-that-must-not-leak";

    [Fact]
    public void TheDefaultsAreValidAndOff()
    {
        var options = new AuthOptions();
        Assert.True(new AuthOptionsValidator().Validate(null, options).Succeeded);
        Assert.False(options.Enabled);
    }

    [Fact]
    public void BadKeysAreNamedButNeverQuoted()
    {
        var options = new AuthOptions
        {
            ApiKeys = { ["ok"] = "0123456789abcdef", ["short"] = "tooshort", ["bad name"] = Secret, ["spaces"] = "with spaces " + Secret, ["unicode"] = "ключ" + Secret },
        };
        string[] failures = [.. new AuthOptionsValidator().Validate(null, options).Failures!];
        Assert.Equal(
            [
                "Auth:ApiKeys:short: the key named 'short' is shorter than 16 characters.",
                "Auth:ApiKeys:bad name: the key name 'bad name' must be 1-64 characters of letters, digits, '.', '_' or '-'.",
                "Auth:ApiKeys:spaces: the key named 'spaces' must be printable ASCII without spaces (it travels in an HTTP header).",
                "Auth:ApiKeys:unicode: the key named 'unicode' must be printable ASCII without spaces (it travels in an HTTP header).",
            ],
            failures);
        Assert.All(failures, f => Assert.DoesNotContain(Secret, f, StringComparison.Ordinal));
    }

    [Fact]
    public void AKeysFileIsParsedLineByLine()
    {
        string dir = Directory.CreateTempSubdirectory("vqd-keys-").FullName;
        try
        {
            string file = Path.Combine(dir, "keys");
            File.WriteAllText(file, $"# comment\n\nalpha: {Secret}\nbeta:{Secret}x\nalpha:{Secret}y\nno-colon\nshort:abc\n");
            var problems = new List<string>();
            var keys = ApiKeyStore.ParseFile(file, problems);
            Assert.Equal([("alpha", Secret), ("beta", Secret + "x")], keys);
            Assert.Equal(
                [
                    $"Auth:ApiKeysFile '{file}' line 5: the name 'alpha' is used twice.",
                    $"Auth:ApiKeysFile '{file}' line 6: expected 'name:key'.",
                    $"Auth:ApiKeysFile '{file}' line 7: the key named 'short' is shorter than 16 characters.",
                ],
                problems);

            problems.Clear();
            ApiKeyStore.ParseFile(Path.Combine(dir, "missing"), problems);
            Assert.StartsWith($"Auth:ApiKeysFile: cannot read '{Path.Combine(dir, "missing")}': Could not find file", Assert.Single(problems), StringComparison.Ordinal);

            File.WriteAllText(file, "# nothing yet\n");
            problems.Clear();
            ApiKeyStore.ParseFile(file, problems);
            Assert.Equal([$"Auth:ApiKeysFile '{file}' holds no key ('name:key' lines)."], problems);

            var both = new AuthOptions { ApiKeysFile = Path.Combine(dir, "both") };
            File.WriteAllText(both.ApiKeysFile, $"ci:{Secret}\n");
            both.ApiKeys["ci"] = Secret + "2";
            Assert.Equal(["Auth:ApiKeysFile: the key name 'ci' is also in Auth:ApiKeys."], new AuthOptionsValidator().Validate(null, both).Failures);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void JwtSettingsAreCheckedTogether()
    {
        static string[] Failures(JwtOptions jwt) => [.. new AuthOptionsValidator().Validate(null, new AuthOptions { Jwt = jwt }).Failures ?? []];

        Assert.Empty(Failures(new JwtOptions { Audience = "a", Issuer = "https://i", SigningKey = new string('k', 32) }));
        Assert.Empty(Failures(new JwtOptions { Audience = "a", Authority = "https://login.example.com/realm" }));
        Assert.Empty(Failures(new JwtOptions { Audience = "a", Authority = "http://127.0.0.1:8081" }));
        Assert.Equal(
            ["Auth:Jwt:Audience is required with JWT validation (the 'aud' tokens must name).", "Auth:Jwt:Issuer is required with SigningKey/SigningKeyFile (the 'iss' tokens must name).", "Auth:Jwt:SigningKey must be at least 32 bytes of UTF-8 (an HMAC secret), got 6."],
            Failures(new JwtOptions { SigningKey = "secret" }));
        Assert.Equal(
            ["Auth:Jwt:Authority must be an https:// URL (http:// only on loopback), got 'http://login.example.com'.", "Auth:Jwt:Authority and SigningKey/SigningKeyFile exclude each other: the authority publishes its keys."],
            Failures(new JwtOptions { Audience = "a", Authority = "http://login.example.com", SigningKey = new string('k', 32) }));

        string dir = Directory.CreateTempSubdirectory("vqd-jwt-").FullName;
        try
        {
            string notPem = Path.Combine(dir, "key.txt");
            File.WriteAllText(notPem, "not a key");
            Assert.Equal(
                [$"Auth:Jwt:SigningKeyFile '{notPem}': no RSA or EC public key, or certificate, in PEM form (-----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----)."],
                Failures(new JwtOptions { Audience = "a", Issuer = "i", SigningKeyFile = notPem }));
            string ec = Path.Combine(dir, "ec.pem");
            using (var key = ECDsa.Create(ECCurve.NamedCurves.nistP256))
            {
                File.WriteAllText(ec, key.ExportSubjectPublicKeyInfoPem());
            }

            Assert.Empty(Failures(new JwtOptions { Audience = "a", Issuer = "i", SigningKeyFile = ec }));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData(null, false, null, null)]
    [InlineData("Bearer abcdefghijklmnop", true, "abcdefghijklmnop", null)]
    [InlineData("bearer abcdefghijklmnop", true, "abcdefghijklmnop", null)]
    [InlineData("Basic abcdefghijklmnop", false, null, "the authorization metadata must be 'Bearer <API key or token>'")]
    [InlineData("Bearer ", false, null, "the authorization metadata must be 'Bearer <API key or token>'")]
    [InlineData("Bearer    ", false, null, "the authorization metadata must be 'Bearer <API key or token>'")]
    public void TheBearerHeaderIsReadStrictly(string? header, bool ok, string? credential, string? problem)
    {
        Assert.Equal(ok, BearerCredential.TryRead(header is null ? StringValues.Empty : new StringValues(header), out string? read, out string? why));
        Assert.Equal(credential, read);
        Assert.Equal(problem, why);
        Assert.False(BearerCredential.TryRead(new StringValues(["Bearer a", "Bearer b"]), out _, out string? two));
        Assert.Equal("more than one authorization header", two);
    }

    [Fact]
    public void TheCallerIsTheCredentialsNameOrElseThePeersHost()
    {
        var caller = new CallerIdentity();
        var anonymous = new TestServerCallContext("/vqdiffusion.v1.VqDiffusionService/Generate");
        anonymous.UserState["__HttpContext"] = new DefaultHttpContext();
        Assert.Equal("127.0.0.1", caller.CallerOf(anonymous));

        var signedIn = new TestServerCallContext("/vqdiffusion.v1.VqDiffusionService/Generate");
        signedIn.UserState["__HttpContext"] = new DefaultHttpContext
        {
            User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(AuthSchemes.CallerClaim, "key:ci")], AuthSchemes.ApiKey)),
        };
        Assert.Equal("key:ci", caller.CallerOf(signedIn));
    }
}
