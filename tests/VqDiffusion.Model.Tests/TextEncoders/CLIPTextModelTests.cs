using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.TextEncoders;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.TextEncoders;

public sealed class CLIPTextModelTests
{
    // manifest.json: tolerances.text_encoder
    private const double Atol = 2e-5;
    private const double Rtol = 1e-4;

    private readonly ITestOutputHelper _output;

    public CLIPTextModelTests(ITestOutputHelper output) => _output = output;

    private static string TinyDir => Path.Combine(Fixtures.TinyModel, "text_encoder");

    private static CLIPTextModel LoadTiny()
    {
        var config = ConfigFile.Load<CLIPTextConfig>(Path.Combine(TinyDir, "config.json"));
        var model = new CLIPTextModel(config);
        StateDictLoader.Load(model, WeightsLocator.Locate(TinyDir), new LoadOptions { IgnoreKey = CLIPTextModel.IsIgnoredKey });
        return model;
    }

    [Fact]
    public void MatchesTransformersGolden()
    {
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("text_encoder.safetensors");
        using var model = LoadTiny();

        Tensor last = model.forward(golden["input_ids"]);
        Tensor normalized = last / last.norm(-1, keepdim: true);

        Assert.Equal(ScalarType.Float32, last.dtype);
        Assert.Equal(new long[] { 4, 77, 32 }, last.shape);
        TensorAssert.Close(golden["last_hidden_state"], last, Atol, Rtol, "last_hidden_state", _output);
        TensorAssert.Close(golden["normalized"], normalized, Atol, Rtol, "normalized", _output);
    }

    [Fact]
    public void AttentionIsCausal()
    {
        // Changing a later token must not change the hidden states of the earlier positions.
        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("text_encoder.safetensors");
        using var model = LoadTiny();
        Tensor ids = golden["input_ids"].narrow(0, 0, 1).clone();
        Tensor before = model.forward(ids);

        ids[0, 40] = torch.tensor(5L);
        Tensor after = model.forward(ids);

        Assert.True(before.narrow(1, 0, 40).eq(after.narrow(1, 0, 40)).all().item<bool>(), "positions before the change moved");
        Assert.False(before.narrow(1, 40, 37).eq(after.narrow(1, 40, 37)).all().item<bool>(), "positions from the change on did not move");
    }

    [Fact]
    public void CausalMaskHasMinFloatAboveTheDiagonal()
    {
        using var mask = CLIPTextTransformer.CausalMask(3, ScalarType.Float32, torch.CPU);
        float min = float.MinValue;
        float[] expected = [0, min, min, 0, 0, min, 0, 0, 0];
        Assert.Equal(new long[] { 1, 1, 3, 3 }, mask.shape);
        Assert.Equal(expected, mask.data<float>().ToArray());
    }

    [Fact]
    public void PositionIdsBufferOfOldCheckpointsIsIgnored()
    {
        Assert.True(CLIPTextModel.IsIgnoredKey("text_model.embeddings.position_ids"));
        Assert.False(CLIPTextModel.IsIgnoredKey("text_model.embeddings.position_embedding.weight"));

        using var scope = NewDisposeScope();
        var golden = Fixtures.LoadGolden("text_encoder.safetensors");
        var config = ConfigFile.Load<CLIPTextConfig>(Path.Combine(TinyDir, "config.json"));
        using var file = new WithPositionIds(SafeTensorsFile.Open(WeightsLocator.Locate(TinyDir).Single()));

        using var strict = new CLIPTextModel(config);
        var ex = Assert.Throws<ModelLoadException>(() => StateDictLoader.Load(strict, [file], new LoadOptions()));
        Assert.Contains("position_ids", ex.Message, StringComparison.Ordinal);

        using var model = new CLIPTextModel(config);
        StateDictLoader.Load(model, [file], new LoadOptions { IgnoreKey = CLIPTextModel.IsIgnoredKey });
        TensorAssert.Close(golden["last_hidden_state"], model.forward(golden["input_ids"]), Atol, Rtol, "last_hidden_state (checkpoint with position_ids)", _output);
    }

    [Fact]
    public void IthqStructureMatchesTheRealCheckpoint()
    {
        var config = ConfigFile.Load<CLIPTextConfig>(Path.Combine(Fixtures.IthqStructure, "text_encoder", "config.json"));
        using var model = new CLIPTextModel(config, torch.META);

        var result = StructureAssert.MatchesIthq(model, "text_encoder", _output);
        Assert.Equal(196, result.NumKeys);
        Assert.Equal(63_165_952L, result.NumParameters);
        Assert.True(result.OrderMatches, "key order differs from the checkpoint's");
    }

    [Fact]
    public void DeviceAndDtypeReachEveryParameter()
    {
        var config = ConfigFile.Load<CLIPTextConfig>(Path.Combine(TinyDir, "config.json"));
        using var model = new CLIPTextModel(config, torch.META, ScalarType.Float16);

        var stateDict = model.state_dict();
        Assert.Equal(2 + (2 * 16) + 2, stateDict.Count);
        Assert.All(stateDict, kv =>
        {
            Assert.Equal(DeviceType.META, kv.Value.device_type);
            Assert.Equal(ScalarType.Float16, kv.Value.dtype);
        });
    }

    [Fact]
    public void ConfigWithoutSizesGetsTheClipVitB32TextDefaults()
    {
        string dir = Directory.CreateTempSubdirectory("vqd-clip-config-").FullName;
        try
        {
            string path = Path.Combine(dir, "config.json");
            File.WriteAllText(path, """{"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "initializer_factor": 1.0}""");
            var config = ConfigFile.Load<CLIPTextConfig>(path);

            Assert.Equal(49408, config.VocabSize);
            Assert.Equal(512, config.HiddenSize);
            Assert.Equal(2048, config.IntermediateSize);
            Assert.Equal(12, config.NumHiddenLayers);
            Assert.Equal(8, config.NumAttentionHeads);
            Assert.Equal(77, config.MaxPositionEmbeddings);
            Assert.Equal("quick_gelu", config.HiddenAct);
            Assert.Equal(1e-5, config.LayerNormEps);

            using var model = new CLIPTextModel(config, torch.META);
            StructureAssert.MatchesIthq(model, "text_encoder", _output);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("gelu")]
    [InlineData("gelu_new")]
    [InlineData("relu")]
    public void OtherActivationsRun(string act)
    {
        using var scope = NewDisposeScope();
        var config = new CLIPTextConfig { VocabSize = 10, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, MaxPositionEmbeddings = 5, HiddenAct = act };
        using var model = new CLIPTextModel(config);
        Tensor h = model.forward(torch.tensor(new long[] { 1, 2, 3, 9 }).view(1, 4));
        Assert.Equal(new long[] { 1, 4, 8 }, h.shape);
        Assert.True(h.isfinite().all().item<bool>());
    }

    [Fact]
    public void UnsupportedConfigsAndInputsAreRejected()
    {
        var badAct = new CLIPTextConfig { HiddenAct = "swish" };
        var ex = Assert.Throws<ModelLoadException>(() => new CLIPTextModel(badAct, torch.META));
        Assert.Contains("swish", ex.Message, StringComparison.Ordinal);

        var badHeads = new CLIPTextConfig { HiddenSize = 30, NumAttentionHeads = 8 };
        Assert.Throws<ModelLoadException>(() => new CLIPTextModel(badHeads, torch.META));

        using var scope = NewDisposeScope();
        var small = new CLIPTextConfig { VocabSize = 10, HiddenSize = 8, IntermediateSize = 16, NumHiddenLayers = 1, NumAttentionHeads = 2, MaxPositionEmbeddings = 5 };
        using var model = new CLIPTextModel(small);
        Assert.Throws<ArgumentException>(() => model.forward(torch.zeros(1, 6, dtype: ScalarType.Int64)));
        Assert.Throws<ArgumentException>(() => model.forward(torch.zeros(1, 4, dtype: ScalarType.Int32)));
    }

    /// <summary>The tiny checkpoint plus the int64 <c>position_ids</c> buffer transformers &lt; 4.31 saved.</summary>
    private sealed class WithPositionIds : IWeightsFile
    {
        private readonly SafeTensorsFile _inner;
        private readonly Dictionary<string, TensorEntry> _tensors;

        public WithPositionIds(SafeTensorsFile inner)
        {
            _inner = inner;
            _tensors = new Dictionary<string, TensorEntry>(inner.Tensors)
            {
                [CLIPTextModel.PositionIdsKey] = new TensorEntry(
                    CLIPTextModel.PositionIdsKey, ScalarType.Int64, [1, 77], inner.Path, () => torch.arange(77L).view(1, 77)),
            };
        }

        public string Path => _inner.Path;

        public IReadOnlyDictionary<string, TensorEntry> Tensors => _tensors;

        public void Dispose() => _inner.Dispose();
    }
}
