using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Transformers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Transformers;

public sealed class Transformer2DModelTests
{
    // manifest.json: tolerances.transformer
    private const double Atol = 1e-4;
    private const double Rtol = 1e-4;

    private readonly ITestOutputHelper _output;

    public Transformer2DModelTests(ITestOutputHelper output) => _output = output;

    private static string TinyDir => Path.Combine(Fixtures.TinyModel, "transformer");

    private static Transformer2DModel LoadTiny()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(TinyDir, "config.json"));
        var model = new Transformer2DModel(config);
        StateDictLoader.Load(model, WeightsLocator.Locate(TinyDir));
        return model;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(50)]
    [InlineData(99)]
    public void MatchesDiffusersGolden(int timestep)
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = LoadTiny();

        Tensor actual = model.forward(golden["latents"], golden["encoder_hidden_states"], timestep);

        Assert.Equal(ScalarType.Float32, actual.dtype);
        Assert.Equal(new long[] { 3, 64, 64 }, actual.shape);
        TensorAssert.Close(golden[$"sample_t{timestep}"], actual, Atol, Rtol, $"sample_t{timestep}", _output);
    }

    [Fact]
    public void BlocksToRunStopsAfterTheFirstBlocksAsAShallowerModelWould()
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = LoadTiny();
        Assert.True(model.Config.NumLayers >= 2, "the tiny transformer has at least two blocks");
        var shallowConfig = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(TinyDir, "config.json"));
        shallowConfig.NumLayers = 1;
        using var shallow = new Transformer2DModel(shallowConfig);
        StateDictLoader.Load(shallow, WeightsLocator.Locate(TinyDir), new LoadOptions
        {
            IgnoreKey = key => key.StartsWith("transformer_blocks.", StringComparison.Ordinal) && !key.StartsWith("transformer_blocks.0.", StringComparison.Ordinal),
        });
        Tensor t = torch.tensor(50L);
        Tensor full = model.ForwardLogits(golden["latents"], golden["encoder_hidden_states"], t);

        model.BlocksToRun = 1;
        Tensor firstBlock = model.ForwardLogits(golden["latents"], golden["encoder_hidden_states"], t);
        model.BlocksToRun = model.Config.NumLayers;
        Tensor allBlocks = model.ForwardLogits(golden["latents"], golden["encoder_hidden_states"], t);

        Assert.True(firstBlock.equal(shallow.ForwardLogits(golden["latents"], golden["encoder_hidden_states"], t)).all().item<bool>(), "one block = the one-block model, bit for bit");
        Assert.False(firstBlock.equal(full).all().item<bool>(), "one block is not the whole model");
        Assert.True(allBlocks.equal(full).all().item<bool>(), "as many blocks as the model has = the whole model");
    }

    [Fact]
    public void TimestepTensorOverloadAgreesWithLongOverload()
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = LoadTiny();

        Tensor fromLong = model.forward(golden["latents"], golden["encoder_hidden_states"], 50);
        Tensor fromTensor = model.forward(golden["latents"], golden["encoder_hidden_states"], torch.tensor(50L));

        Assert.True(fromLong.eq(fromTensor).all().item<bool>());
    }

    [Fact]
    public void RowsAreIndependentOfTheRestOfTheBatch()
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = LoadTiny();

        Tensor batch = model.forward(golden["latents"], golden["encoder_hidden_states"], 1);
        for (int b = 0; b < 3; b++)
        {
            Tensor single = model.forward(golden["latents"].narrow(0, b, 1), golden["encoder_hidden_states"].narrow(0, b, 1), 1);
            TensorAssert.Close(batch.narrow(0, b, 1), single, 1e-5, 1e-5, $"row {b} alone vs in batch", _output);
        }
    }

    [Fact]
    public void OutputIsANormalisedLogDistributionOverTheCodeClasses()
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = LoadTiny();

        Tensor logP = model.forward(golden["latents"], golden["encoder_hidden_states"], 99);
        Tensor total = logP.to(ScalarType.Float64).exp().sum(1);

        TensorAssert.Close(torch.ones_like(total), total, 1e-5, 0, "sum over classes of p(x0)", _output);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(100)]
    public void RejectsTimestepsOutsideTheAdaNormTable(long timestep)
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = LoadTiny();

        Assert.Throws<ArgumentOutOfRangeException>(() => model.forward(golden["latents"], golden["encoder_hidden_states"], timestep));
    }

    [Fact]
    public void IthqStructureMatchesTheRealCheckpoint()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(Fixtures.IthqStructure, "transformer", "config.json"));
        Assert.Equal("layer_norm", config.NormType);
        Assert.Equal("ada_norm", config.EffectiveNormType);

        using var model = new Transformer2DModel(config, torch.META);

        Assert.Equal(4097, model.NumVectorEmbeds);
        Assert.Equal(32, model.Height);
        Assert.Equal(32, model.Width);
        Assert.Equal(1024, model.NumLatentPixels);
        var result = StructureAssert.MatchesIthq(model, "transformer", _output);
        Assert.Equal(1015, result.NumKeys);
        Assert.Equal(1_359_274_624L, result.NumParameters);
        Assert.True(result.OrderMatches, "key order differs from the checkpoint's");
    }

    [Fact]
    public void DeviceAndDtypeReachEveryParameter()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(TinyDir, "config.json"));
        using var model = new Transformer2DModel(config, torch.META, ScalarType.Float16);

        var stateDict = model.state_dict();
        Assert.Equal(3 + (2 * 28) + 4, stateDict.Count);
        Assert.All(stateDict, kv =>
        {
            Assert.Equal(DeviceType.META, kv.Value.device_type);
            Assert.Equal(ScalarType.Float16, kv.Value.dtype);
        });
    }

    [Fact]
    public void HubStyleConfigWithoutLaterKeysGetsDiffusersDefaults()
    {
        // The form of the ITHQ config written in 2022: no norm_type, attention_type, norm_eps, ... and a
        // different _diffusers_version; the defaults must give the same model.
        string dir = Directory.CreateTempSubdirectory("vqd-transformer-config-").FullName;
        try
        {
            string path = Path.Combine(dir, "config.json");
            File.WriteAllText(path, """
                {
                  "_class_name": "Transformer2DModel",
                  "_diffusers_version": "0.10.0.dev0",
                  "activation_fn": "geglu-approximate",
                  "attention_bias": true,
                  "cross_attention_dim": 512,
                  "num_embeds_ada_norm": 100,
                  "num_layers": 36,
                  "num_vector_embeds": 4097,
                  "sample_size": 32,
                  "some_future_key": [1, 2, 3]
                }
                """);
            var config = ConfigFile.Load<Transformer2DModelConfig>(path);

            Assert.Equal(16, config.NumAttentionHeads);
            Assert.Equal(88, config.AttentionHeadDim);
            Assert.Null(config.InChannels);
            Assert.Null(config.PatchSize);
            Assert.Equal(0.0, config.Dropout);
            Assert.False(config.OnlyCrossAttention);
            Assert.False(config.DoubleSelfAttention);
            Assert.False(config.UpcastAttention);
            Assert.Equal("layer_norm", config.NormType);
            Assert.Equal("ada_norm", config.EffectiveNormType);
            Assert.True(config.NormElementwiseAffine);
            Assert.Equal(1e-5, config.NormEps);
            Assert.Equal("default", config.AttentionType);

            using var model = new Transformer2DModel(config, torch.META);
            Assert.Equal("ada_norm", model.NormType);
            var result = StructureAssert.MatchesIthq(model, "transformer", _output);
            Assert.True(result.OrderMatches);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void MinimalConfigBuildsDiffusersDefaultModel()
    {
        // Only the two keys a discrete model needs: 16 heads x 88, one layer, "geglu", plain LayerNorms, no cross-attention.
        var config = new Transformer2DModelConfig { NumVectorEmbeds = 9, SampleSize = 2 };
        using var model = new Transformer2DModel(config, torch.META);

        Assert.Equal("layer_norm", model.NormType);
        Assert.Equal(1408, model.InnerDim);
        var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        Assert.Equal(new long[] { 9, 1408 }, shapes["latent_image_embedding.emb.weight"]);
        Assert.Equal(new long[] { 2, 1408 }, shapes["latent_image_embedding.height_emb.weight"]);
        Assert.Equal(new long[] { 1408 }, shapes["transformer_blocks.0.norm1.weight"]);
        Assert.Equal(new long[] { 2 * 4 * 1408, 1408 }, shapes["transformer_blocks.0.ff.net.0.proj.weight"]);
        Assert.Equal(new long[] { 1408, 4 * 1408 }, shapes["transformer_blocks.0.ff.net.2.weight"]);
        Assert.Equal(new long[] { 8, 1408 }, shapes["out.weight"]);
        Assert.DoesNotContain("transformer_blocks.0.attn1.to_q.bias", shapes.Keys);
        Assert.DoesNotContain(shapes.Keys, k => k.Contains("attn2", StringComparison.Ordinal) || k.Contains("norm2", StringComparison.Ordinal));
        Assert.DoesNotContain(shapes.Keys, k => k.Contains(".emb.", StringComparison.Ordinal) && k.StartsWith("transformer_blocks", StringComparison.Ordinal));
    }

    [Fact]
    public void LayerNormModelWithoutCrossAttentionRuns()
    {
        using var scope = NewDisposeScope();
        var config = new Transformer2DModelConfig
        {
            NumVectorEmbeds = 5,
            SampleSize = 2,
            NumAttentionHeads = 2,
            AttentionHeadDim = 4,
            ActivationFn = "gelu",
            NumLayers = 2,
        };
        using var model = new Transformer2DModel(config);

        Tensor latents = torch.tensor(new long[] { 0, 1, 4, 3, 4, 4, 2, 2 }).view(2, 4);
        Tensor logP = model.forward(latents, null, 7);

        Assert.Equal(new long[] { 2, 4, 4 }, logP.shape);
        TensorAssert.Close(torch.ones(2, 4, dtype: ScalarType.Float64), logP.to(ScalarType.Float64).exp().sum(1), 1e-6, 0, "sum of p(x0)", _output);
    }

    [Theory]
    [InlineData("gelu", 4 * 48)]
    [InlineData("gelu-approximate", 4 * 48)]
    [InlineData("geglu", 2 * 4 * 48)]
    [InlineData("geglu-approximate", 4 * 48)]
    public void ActivationChoosesTheProjectionWidth(string activation, long projOut)
    {
        var config = new Transformer2DModelConfig
        {
            NumVectorEmbeds = 65,
            SampleSize = 8,
            NumAttentionHeads = 2,
            AttentionHeadDim = 24,
            CrossAttentionDim = 32,
            NumEmbedsAdaNorm = 100,
            ActivationFn = activation,
        };
        using var model = new Transformer2DModel(config, torch.META);
        var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        Assert.Equal(new long[] { projOut, 48 }, shapes["transformer_blocks.0.ff.net.0.proj.weight"]);
        Assert.Equal(new long[] { 100, 48 }, shapes["transformer_blocks.0.norm1.emb.weight"]);
        Assert.Equal(new long[] { 48, 32 }, shapes["transformer_blocks.0.attn2.to_k.weight"]);
    }

    public static TheoryData<string, string> UnsupportedConfigs => new()
    {
        { """{"in_channels": 4, "sample_size": 64}""", "only the discrete" },
        { """{"in_channels": 4, "patch_size": 2, "sample_size": 64, "num_embeds_ada_norm": 1000, "norm_type": "ada_norm_zero"}""", "only the discrete" },
        { """{"num_vector_embeds": 65, "in_channels": 4, "sample_size": 8}""", "only the discrete" },
        { """{"num_vector_embeds": 65, "patch_size": 2, "sample_size": 8}""", "only the discrete" },
        { """{"num_vector_embeds": 65}""", "sample_size" },
        { """{"num_vector_embeds": 65, "sample_size": 8, "num_embeds_ada_norm": 100, "norm_type": "ada_norm_zero"}""", "ada_norm_zero" },
        { """{"num_vector_embeds": 65, "sample_size": 8, "norm_type": "ada_norm"}""", "num_embeds_ada_norm" },
        { """{"num_vector_embeds": 65, "sample_size": 8, "activation_fn": "swish"}""", "swish" },
        { """{"num_vector_embeds": 65, "sample_size": 8, "attention_type": "gated"}""", "gated" },
        { """{"num_vector_embeds": 65, "sample_size": 8, "only_cross_attention": true}""", "only_cross_attention" },
    };

    [Theory]
    [MemberData(nameof(UnsupportedConfigs))]
    public void UnsupportedConfigsAreRejectedWithAReadableError(string json, string expectedInMessage)
    {
        string dir = Directory.CreateTempSubdirectory("vqd-transformer-config-").FullName;
        try
        {
            string path = Path.Combine(dir, "config.json");
            File.WriteAllText(path, json);
            var config = ConfigFile.Load<Transformer2DModelConfig>(path);

            var ex = Assert.Throws<ModelLoadException>(() => new Transformer2DModel(config, torch.META));
            _output.WriteLine(ex.Message);
            Assert.Contains(expectedInMessage, ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
