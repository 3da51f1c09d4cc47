using TorchSharp;
using VqDiffusion.Model.Autoencoders;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Embeddings;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.TextEncoders;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Loading;

/// <summary>
/// Modules built on the meta device and given the files' tensors (no random initialisation) equal modules built
/// normally and loaded by copying, tensor for tensor; nothing stays on the meta device.
/// </summary>
public sealed class MaterializeTests
{
    private static string Dir(string component) => Path.Combine(Fixtures.TinyModel, component);

    private static void AssertSameState(nn.Module expected, nn.Module actual)
    {
        var a = expected.state_dict();
        var b = actual.state_dict();
        Assert.Equal(a.Keys.ToList(), b.Keys.ToList());
        foreach (var (key, value) in a)
        {
            Assert.Equal(DeviceType.CPU, b[key].device_type);
            Assert.Equal(value.dtype, b[key].dtype);
            Assert.True(value.eq(b[key]).all().item<bool>(), $"{key} differs");
        }

        Assert.All(actual.parameters(), p => Assert.Equal(DeviceType.CPU, p.device_type));
        Assert.All(actual.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void TransformerFromMetaEqualsTheCopiedLoad()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(Dir("transformer"), "config.json"));
        var files = WeightsLocator.Locate(Dir("transformer"), null);
        using var copied = new Transformer2DModel(config);
        StateDictLoader.Load(copied, files);
        using var materialized = new Transformer2DModel(config, META);
        StateDictLoader.Materialize(materialized, files, CPU);
        AssertSameState(copied, materialized);

        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var a = copied.forward(golden["latents"], golden["encoder_hidden_states"], 50);
        using var b = materialized.forward(golden["latents"], golden["encoder_hidden_states"], 50);
        Assert.True(a.eq(b).all().item<bool>());
    }

    [Fact]
    public void VqvaeTextEncoderAndLearnedEmbeddingsFromMetaEqualTheCopiedLoad()
    {
        var vqConfig = ConfigFile.Load<VQModelConfig>(Path.Combine(Dir("vqvae"), "config.json"));
        var rename = new LoadOptions { RenameKey = VQModel.RenameDeprecatedKey };
        using var vqCopied = new VQModel(vqConfig);
        StateDictLoader.Load(vqCopied, WeightsLocator.Locate(Dir("vqvae"), null), rename);
        using var vqMeta = new VQModel(vqConfig, META);
        StateDictLoader.Materialize(vqMeta, WeightsLocator.Locate(Dir("vqvae"), null), CPU, rename);
        AssertSameState(vqCopied, vqMeta);

        var textConfig = ConfigFile.Load<CLIPTextConfig>(Path.Combine(Dir("text_encoder"), "config.json"));
        var ignore = new LoadOptions { IgnoreKey = CLIPTextModel.IsIgnoredKey };
        using var textCopied = new CLIPTextModel(textConfig);
        StateDictLoader.Load(textCopied, WeightsLocator.Locate(Dir("text_encoder"), null), ignore);
        using var textMeta = new CLIPTextModel(textConfig, META);
        StateDictLoader.Materialize(textMeta, WeightsLocator.Locate(Dir("text_encoder"), null), CPU, ignore);
        AssertSameState(textCopied, textMeta);

        string cfDir = Dir("learned_classifier_free_sampling_embeddings");
        var cfConfig = ConfigFile.Load<LearnedClassifierFreeSamplingEmbeddingsConfig>(Path.Combine(cfDir, "config.json"));
        using var cfCopied = new LearnedClassifierFreeSamplingEmbeddings(cfConfig);
        StateDictLoader.Load(cfCopied, WeightsLocator.Locate(cfDir, null));
        using var cfMeta = new LearnedClassifierFreeSamplingEmbeddings(cfConfig, META);
        StateDictLoader.Materialize(cfMeta, WeightsLocator.Locate(cfDir, null), CPU);
        AssertSameState(cfCopied, cfMeta);
        Assert.True(cfCopied.Embeddings!.eq(cfMeta.Embeddings!).all().item<bool>(), "the module's own field must hold the loaded tensor");
    }

    [Fact]
    public void HalfPrecisionFromMetaConvertsOnLoad()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(Dir("transformer"), "config.json"));
        using var model = new Transformer2DModel(config, META, ScalarType.Float16);
        StateDictLoader.Materialize(model, WeightsLocator.Locate(Dir("transformer"), null), CPU);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float16, p.dtype));
    }

    [Fact]
    public void MissingKeysAreNamedAndNothingIsHalfLoaded()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(Dir("transformer"), "config.json"));
        using var tmp = new TempDirectory();
        string file = tmp.File("partial.safetensors");
        using (var source = SafeTensorsFile.Open(Path.Combine(Dir("transformer"), "diffusion_pytorch_model.safetensors")))
        {
            SafeTensorsTestWriter.Write(file, source.Tensors.Where(kv => kv.Key != "norm_out.weight").Select(kv => (kv.Key, kv.Value.Read())).ToList());
        }

        using var model = new Transformer2DModel(config, META);
        var ex = Assert.Throws<ModelLoadException>(() => StateDictLoader.Materialize(model, [file], CPU));
        Assert.Contains("'norm_out.weight'", ex.Message);
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
    }
}

/// <summary>Tensors of a safetensors file as views of the memory-mapped file, and the fallback to reading.</summary>
public sealed class MappedSafeTensorsTests
{
    private static string TransformerFile => Path.Combine(Fixtures.TinyModel, "transformer", "diffusion_pytorch_model.safetensors");

    [Fact]
    public void AlignedTensorsAreMappedAndEqualTheReadOnes()
    {
        using var file = SafeTensorsFile.Open(TransformerFile);
        foreach (var (name, entry) in file.Tensors)
        {
            using Tensor? mapped = entry.Map();
            Assert.NotNull(mapped);
            using Tensor read = entry.Read();
            Assert.Equal(read.shape, mapped!.shape);
            Assert.True(read.eq(mapped).all().item<bool>(), $"{name}: the mapped view differs from the read tensor");
        }
    }

    [Fact]
    public void MisalignedDataIsReadInstead()
    {
        using var tmp = new TempDirectory();
        string path = tmp.File("misaligned.safetensors");
        byte[] original = File.ReadAllBytes(TransformerFile);
        long headerLength = BitConverter.ToInt64(original, 0);
        using (var output = File.Create(path))
        {
            output.Write(BitConverter.GetBytes(headerLength + 1));
            output.Write(original, 8, (int)headerLength);
            output.WriteByte((byte)' '); // the data now starts one byte later: no float is aligned
            output.Write(original, 8 + (int)headerLength, original.Length - 8 - (int)headerLength);
        }

        using var file = SafeTensorsFile.Open(path);
        using var reference = SafeTensorsFile.Open(TransformerFile);
        foreach (var (name, entry) in file.Tensors)
        {
            Assert.Null(entry.Map());
            using Tensor read = entry.Read();
            using Tensor expected = reference.Tensors[name].Read();
            Assert.True(read.eq(expected).all().item<bool>(), name);
        }

        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(Fixtures.TinyModel, "transformer", "config.json"));
        using var model = new Transformer2DModel(config, META);
        StateDictLoader.Materialize(model, [path], CPU);
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.CPU, p.device_type));
    }
}
