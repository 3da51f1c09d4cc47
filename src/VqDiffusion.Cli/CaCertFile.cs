using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace VqDiffusion.Cli;

/// <summary><c>--ca-cert FILE</c>: PEM root certificate(s) to trust for an https:// server.</summary>
public static class CaCertFile
{
    private const string Begin = "-----BEGIN CERTIFICATE-----";

    public static X509Certificate2Collection Read(string path, string flag = "--ca-cert")
    {
        string pem;
        try
        {
            pem = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{flag} {path}: {ex.Message}");
        }

        if (!pem.Contains(Begin, StringComparison.Ordinal))
        {
            throw new UsageException($"{flag} {path}: no PEM certificate ({Begin}).");
        }

        var roots = new X509Certificate2Collection();
        try
        {
            roots.ImportFromPem(pem);
        }
        catch (CryptographicException)
        {
            throw new UsageException($"{flag} {path}: not a valid PEM certificate.");
        }

        return roots;
    }
}
