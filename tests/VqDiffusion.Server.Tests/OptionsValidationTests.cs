using VqDiffusion.Model.Pipelines;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Tests;

/// <summary>The option checks behind ValidateOnStart, and the defaults they start from.</summary>
public sealed class OptionsValidationTests
{
    [Fact]
    public void TheDefaultsAreValidAndTheRequestLimitsComeFromGenerationLimits()
    {
        var options = new GenerationOptions();
        Assert.True(new GenerationOptionsValidator().Validate(null, options).Succeeded);
        Assert.True(new ModelOptionsValidator().Validate(null, new ModelOptions()).Succeeded);
        Assert.Equal(GenerationLimits.Default, options.ToLimits());
        Assert.Equal(options.DrainTimeout + options.ShutdownMargin, options.ShutdownTimeout);
    }

    [Fact]
    public void EveryBadValueIsReportedNamingItsKey()
    {
        var options = new GenerationOptions
        {
            MaxQueueLength = -1,
            MaxActiveRuns = 0,
            MaxPrompts = 0,
            MaxImagesPerPrompt = -3,
            MaxBatchSize = 0,
            MaxGuidanceScale = float.NaN,
            DefaultImageQuality = 101,
            DrainTimeout = TimeSpan.FromSeconds(-1),
            ShutdownMargin = TimeSpan.FromDays(30),
            MaxQueuedPerCaller = -1,
            MaxActivePerCaller = -1,
            EventBufferBytes = -1,
        };
        var result = new GenerationOptionsValidator().Validate(null, options);
        Assert.True(result.Failed);
        string[] keys =
        [
            "MaxQueueLength", "MaxActiveRuns", "MaxPrompts", "MaxImagesPerPrompt", "MaxBatchSize", "MaxGuidanceScale",
            "DefaultImageQuality", "DrainTimeout", "ShutdownMargin", "MaxQueuedPerCaller", "MaxActivePerCaller",
            "EventBufferBytes",
        ];
        Assert.Equal(keys.Length, result.Failures!.Count());
        foreach (string key in keys)
        {
            Assert.Single(result.Failures!, f => f.StartsWith($"Generation:{key} must ", StringComparison.Ordinal));
        }
    }

    [Theory]
    [InlineData("float32", "cpu", true)]
    [InlineData("bf16", "cuda:1", true)]
    [InlineData("FLOAT16", "cuda", true)]
    [InlineData("float64", "cpu", false)]
    [InlineData("float32", "CUDA", false)]
    [InlineData("float32", "cuda:x", false)]
    public void ModelOptionsAcceptTheDocumentedDTypesAndDevices(string dtype, string device, bool valid)
    {
        var result = new ModelOptionsValidator().Validate(null, new ModelOptions { DType = dtype, Device = device });
        Assert.Equal(valid, result.Succeeded);
    }

    [Theory]
    [InlineData("ipv4:127.0.0.1:51234", "127.0.0.1")]
    [InlineData("ipv6:[::1]:51234", "[::1]")]
    [InlineData("ipv4:10.0.0.7", "10.0.0.7")]
    [InlineData("unix:/tmp/vqd.sock", "unix:/tmp/vqd.sock")]
    [InlineData("", "unknown")]
    public void TheCallerIsThePeerAddressWithoutItsPort(string peer, string caller) => Assert.Equal(caller, PeerCallerIdentity.HostOf(peer));

    [Theory]
    [InlineData("a cat", 5)]
    [InlineData("😀", 1)]
    [InlineData("é", 1)]
    [InlineData("e\u0301", 2)] // two scalar values (e + combining acute)
    public void CharactersAreUnicodeScalarValues(string text, int characters) => Assert.Equal(characters, GenerationLimits.CountCharacters(text));
}
