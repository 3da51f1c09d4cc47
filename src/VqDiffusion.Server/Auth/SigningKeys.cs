using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.IdentityModel.Tokens;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Auth;

/// <summary>The issuer signing keys of <c>Auth:Jwt:SigningKey</c> and <c>Auth:Jwt:SigningKeyFile</c>.</summary>
public static class SigningKeys
{
    /// <summary>Shortest HMAC secret accepted, in bytes (what HS256 needs).</summary>
    public const int MinimumSecretBytes = 32;

    /// <summary>The configured keys; <paramref name="problems"/> gets one line per key that cannot be used.</summary>
    public static IReadOnlyList<SecurityKey> Load(JwtOptions options, List<string> problems)
    {
        var keys = new List<SecurityKey>();
        if (!string.IsNullOrEmpty(options.SigningKey))
        {
            byte[] secret = Encoding.UTF8.GetBytes(options.SigningKey);
            if (secret.Length < MinimumSecretBytes)
            {
                problems.Add($"{AuthOptions.Section}:Jwt:SigningKey must be at least {MinimumSecretBytes} bytes of UTF-8 (an HMAC secret), got {secret.Length}.");
            }
            else
            {
                keys.Add(new SymmetricSecurityKey(secret));
            }
        }

        if (!string.IsNullOrWhiteSpace(options.SigningKeyFile))
        {
            string path = options.SigningKeyFile;
            string prefix = $"{AuthOptions.Section}:Jwt:SigningKeyFile '{path}'";
            string pem;
            try
            {
                pem = File.ReadAllText(path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                problems.Add($"{prefix}: cannot read it: {ex.Message}");
                return keys;
            }

            SecurityKey? key = FromPem(pem);
            if (key is null)
            {
                problems.Add($"{prefix}: no RSA or EC public key, or certificate, in PEM form (-----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----).");
            }
            else
            {
                keys.Add(key);
            }
        }

        return keys;
    }

    private static SecurityKey? FromPem(string pem)
    {
        if (pem.Contains("-----BEGIN CERTIFICATE-----", StringComparison.Ordinal))
        {
            try
            {
                return new X509SecurityKey(X509Certificate2.CreateFromPem(pem));
            }
            catch (CryptographicException)
            {
                return null;
            }
        }

        try
        {
            var rsa = RSA.Create();
            rsa.ImportFromPem(pem);
            return new RsaSecurityKey(rsa);
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            // Not RSA: try EC.
        }

        try
        {
            var ec = ECDsa.Create();
            ec.ImportFromPem(pem);
            return new ECDsaSecurityKey(ec);
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            return null;
        }
    }
}
