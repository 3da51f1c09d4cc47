using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>
/// A pipeline whose classifier-free embeddings are not learnable encodes the empty prompt as the
/// negative rows (diffusers' <c>_encode_prompt</c> else-branch).
/// </summary>
public sealed class UnlearnedGuidanceTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-unlearned-" + Guid.NewGuid().ToString("N"));

    public UnlearnedGuidanceTests(ITestOutputHelper output)
    {
        _output = output;
        CopyDirectory(Fixtures.TinyModel, _dir);
        string cf = Path.Combine(_dir, "learned_classifier_free_sampling_embeddings");
        Directory.Delete(cf, recursive: true);
        Directory.CreateDirectory(cf);
        File.WriteAllText(Path.Combine(cf, "config.json"), """{"_class_name": "LearnedClassifierFreeSamplingEmbeddings", "learnable": false, "hidden_size": null, "length": null}""");
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void NegativeRowsAreTheNormalizedEmptyPrompt()
    {
        var golden = Fixtures.LoadGolden("text_encoder.safetensors");
        using var pipeline = VQDiffusionPipeline.FromPretrained(_dir);
        Assert.False(pipeline.learned_classifier_free_sampling_embeddings.Learnable);
        using var embeds = pipeline.EncodePrompt(["a photo of a cat"], 2, doClassifierFreeGuidance: true);
        Assert.Equal(new long[] { 4, 77, 32 }, embeds.shape);
        var normalized = golden["normalized"]; // rows: "a photo of a cat", ..., "" (index 3)
        for (int i = 0; i < 2; i++)
        {
            TensorAssert.Close(normalized[3], embeds[i], 2e-5, 1e-4, $"negative row {i} = normalized encoding of \"\"", _output);
            TensorAssert.Close(normalized[0], embeds[2 + i], 2e-5, 1e-4, $"prompt row {2 + i}", _output);
        }

        GenerationResult result = pipeline.Generate(new GenerationRequest { Prompts = ["a photo of a cat"], NumInferenceSteps = 3, Seed = 1 });
        Assert.Single(result.Images);
    }

    private static void CopyDirectory(string source, string target)
    {
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        }

        foreach (string dir in Directory.GetDirectories(source))
        {
            CopyDirectory(dir, Path.Combine(target, Path.GetFileName(dir)));
        }
    }
}
