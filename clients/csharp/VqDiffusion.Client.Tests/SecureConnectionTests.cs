using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Server.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Client.Tests;

/// <summary>
/// <see cref="VqDiffusionClientOptions.ApiKey"/> and <see cref="VqDiffusionClientOptions.RootCertificates"/> against the
/// real server on https://127.0.0.1 with a self-signed certificate made in the test and an API key.
/// </summary>
public sealed class SecureConnectionTests : IClassFixture<TlsServerFixture>
{
    private readonly TlsServerFixture _tls;
    private readonly ITestOutputHelper _output;

    public SecureConnectionTests(TlsServerFixture tls, ITestOutputHelper output)
    {
        _tls = tls;
        _output = output;
    }

    private VqDiffusionClient Client(string? apiKey = TlsServerFixture.ApiKey, bool trust = true) => new(_tls.Address, new VqDiffusionClientOptions
    {
        ApiKey = apiKey,
        RootCertificates = trust ? [X509Certificate2.CreateFromPem(File.ReadAllText(_tls.CertificatePath))] : null,
        Retry = VqDiffusionRetryOptions.None,
    });

    [Fact]
    public async Task WithTheKeyAndTheCertificateTrustedItGeneratesTheGoldenImage()
    {
        using var client = Client();
        GetModelInfoResponse info = await client.GetModelInfoAsync();
        Assert.Equal(8, info.LatentHeight);

        GenerationOutput output = await client.GenerateImagesAsync(new GenerateRequest { Prompts = { "a photo of a cat" }, NumInferenceSteps = 10, GuidanceScale = 5, TruncationRate = 1, Seed = 0 });
        var image = Assert.Single(output.Images);
        var expected = ImageEncoder.DecodeRgb(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "png", "pipeline_single_cfg_0.png")));
        PixelAssert.WithinDecoderRounding(expected.Rgb, ImageEncoder.DecodeRgb(image.Data).Rgb, "TLS single_cfg 0", _output);
    }

    [Fact]
    public async Task WithoutTheKeyOrWithAWrongOneItIsUnauthenticated()
    {
        using var none = Client(apiKey: null);
        VqDiffusionException missing = await Assert.ThrowsAsync<VqDiffusionException>(() => none.GetModelInfoAsync());
        Assert.Equal(StatusCode.Unauthenticated, missing.StatusCode);
        Assert.Equal("no credentials: send the metadata 'authorization: Bearer <API key or token>'", missing.Detail);

        using var wrong = Client(apiKey: "not-the-key-0123456789abcdef");
        VqDiffusionException invalid = await Assert.ThrowsAsync<VqDiffusionException>(async () =>
        {
            await foreach (GenerationEvent _ in wrong.GenerateAsync(new GenerateRequest { Prompts = { "a cat" }, NumInferenceSteps = 2 }))
            {
            }
        });
        Assert.Equal(StatusCode.Unauthenticated, invalid.StatusCode);
        Assert.Equal("the API key is not valid", invalid.Detail);
    }

    [Fact]
    public async Task AnUntrustedCertificateFailsTheHandshake()
    {
        using var client = Client(trust: false);
        VqDiffusionException ex = await Assert.ThrowsAsync<VqDiffusionException>(() => client.GetModelInfoAsync());
        // grpc-dotnet reports a failed TLS handshake as INTERNAL "Error starting gRPC call. HttpRequestException: The SSL
        // connection could not be established ..." (not retried: the certificate will not change by itself).
        _output.WriteLine(ex.Detail);
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.Contains("The SSL connection could not be established", ex.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void AKeyThatCannotTravelInAHeaderIsRefusedAtOnce()
    {
        Assert.Equal("must not be empty", VqDiffusionClient.ApiKeyProblem(string.Empty));
        Assert.Equal("must be printable ASCII without spaces", VqDiffusionClient.ApiKeyProblem("two words"));
        Assert.Equal("must be printable ASCII without spaces", VqDiffusionClient.ApiKeyProblem("ключ"));
        Assert.Null(VqDiffusionClient.ApiKeyProblem(TlsServerFixture.ApiKey));
        var ex = Assert.Throws<ArgumentException>(() => new VqDiffusionClient(_tls.Address, new VqDiffusionClientOptions { ApiKey = "line\nbreak" }));
        Assert.StartsWith("the API key must be printable ASCII without spaces", ex.Message, StringComparison.Ordinal);
    }
}
