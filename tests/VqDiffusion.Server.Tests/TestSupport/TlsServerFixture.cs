using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// The server with the tiny model on <c>https://127.0.0.1</c> (Kestrel with a self-signed certificate made here, for
/// 127.0.0.1 and localhost) and an API key, as <c>Kestrel:Certificates:Default:Path/KeyPath</c> and
/// <c>Auth:ApiKeys</c> configure it; the certificate's PEM file is what clients are told to trust.
/// </summary>
public sealed class TlsServerFixture : IAsyncLifetime
{
    public const string ApiKey = "tls-test-key-0123456789abcdef";

    private readonly string _dir = Directory.CreateTempSubdirectory("vqd-tls-").FullName;
    private RunningServer? _server;

    public RunningServer Server => _server ?? throw new InvalidOperationException("not started");

    /// <summary>https://127.0.0.1:PORT.</summary>
    public string Address => Server.Address;

    /// <summary>The server certificate (PEM), the root a client must trust.</summary>
    public string CertificatePath => Path.Combine(_dir, "server.crt");

    public X509Certificate2 Certificate { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        string keyPath = Path.Combine(_dir, "server.key");
        Certificate = CreateSelfSigned(CertificatePath, keyPath);
        _server = await RunningServer.StartAsync(
        [
            $"--Model:Path={Fixtures.TinyModel}",
            "--urls", "https://127.0.0.1:0",
            $"--Kestrel:Certificates:Default:Path={CertificatePath}",
            $"--Kestrel:Certificates:Default:KeyPath={keyPath}",
            $"--Auth:ApiKeys:tests={ApiKey}",
        ]);
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }

        Certificate?.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A self-signed RSA certificate for 127.0.0.1 and localhost, valid for a day, written as PEM certificate and key.</summary>
    public static X509Certificate2 CreateSelfSigned(string certificatePath, string keyPath)
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false)); // server authentication
        X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, rsa.ExportPkcs8PrivateKeyPem());
        return certificate;
    }
}
