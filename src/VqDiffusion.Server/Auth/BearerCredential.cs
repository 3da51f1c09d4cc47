using Microsoft.Extensions.Primitives;

namespace VqDiffusion.Server.Auth;

/// <summary>Reads the credential of an <c>authorization: Bearer CREDENTIAL</c> header.</summary>
public static class BearerCredential
{
    private const string Prefix = "Bearer ";

    /// <summary>
    /// True with the credential when <paramref name="header"/> is one well-formed bearer value; false with a null
    /// problem when there is no header, or with the problem (never quoting the value) when it is malformed.
    /// </summary>
    public static bool TryRead(StringValues header, out string? credential, out string? problem)
    {
        credential = null;
        problem = null;
        if (StringValues.IsNullOrEmpty(header))
        {
            return false;
        }

        if (header.Count > 1)
        {
            problem = "more than one authorization header";
            return false;
        }

        string value = header[0]!;
        if (!value.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase) || value.Length == Prefix.Length)
        {
            problem = "the authorization metadata must be 'Bearer <API key or token>'";
            return false;
        }

        credential = value[Prefix.Length..].Trim();
        if (credential.Length == 0)
        {
            problem = "the authorization metadata must be 'Bearer <API key or token>'";
            credential = null;
            return false;
        }

        return true;
    }

    /// <summary>True when the credential has the shape of a JWT (three base64url parts separated by dots).</summary>
    public static bool LooksLikeJwt(string credential) =>
        credential.Count(c => c == '.') == 2 && credential.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '=');
}
