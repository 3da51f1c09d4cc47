using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Embeddings;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Embeddings;

public sealed class LearnedClassifierFreeSamplingEmbeddingsTests
{
    private readonly ITestOutputHelper _output;

    public LearnedClassifierFreeSamplingEmbeddingsTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void IthqStructureMatchesTheCheckpointKeys()
    {
        var config = ConfigFile.Load<LearnedClassifierFreeSamplingEmbeddingsConfig>(
            Path.Combine(Fixtures.IthqStructure, "learned_classifier_free_sampling_embeddings", "config.json"));
        using var module = new LearnedClassifierFreeSamplingEmbeddings(config, torch.META);
        StructureAssert.MatchesIthq(module, "learned_classifier_free_sampling_embeddings", _output);
    }

    [Fact]
    public void TinyEmbeddingsLoadAndNotLearnableHasNoWeights()
    {
        string dir = Path.Combine(Fixtures.TinyModel, "learned_classifier_free_sampling_embeddings");
        var config = ConfigFile.Load<LearnedClassifierFreeSamplingEmbeddingsConfig>(Path.Combine(dir, "config.json"));
        using var module = new LearnedClassifierFreeSamplingEmbeddings(config);
        StateDictLoader.Load(module, WeightsLocator.Locate(dir));
        using var file = SafeTensorsFile.Open(WeightsLocator.Locate(dir).Single());
        using var expected = file.Tensors["embeddings"].Read();
        Assert.True(module.Embeddings!.eq(expected).all().item<bool>(), "embeddings differ from the file");

        using var off = new LearnedClassifierFreeSamplingEmbeddings(new LearnedClassifierFreeSamplingEmbeddingsConfig { Learnable = false });
        Assert.False(off.Learnable);
        Assert.Null(off.Embeddings);
        Assert.Empty(off.state_dict());
    }
}
