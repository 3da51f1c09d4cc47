using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Transformers;

namespace VqDiffusion.Model.Tests.Loading;

/// <summary>The same transformer weights from .bin and .safetensors, and the errors for broken files.</summary>
public sealed class WeightFormatsTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "vqd-weights-" + Guid.NewGuid().ToString("N"));

    public WeightFormatsTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string TransformerDir => Path.Combine(Fixtures.TinyModel, "transformer");

    private static Transformer2DModel Load(string file)
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(TransformerDir, "config.json"));
        var model = new Transformer2DModel(config);
        StateDictLoader.Load(model, [file]);
        return model;
    }

    [Fact]
    public void BinAndSafetensorsGiveIdenticalOutputs()
    {
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var fromBin = Load(Path.Combine(TransformerDir, "diffusion_pytorch_model.bin"));
        using var fromSafetensors = Load(Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors"));
        foreach (long t in new long[] { 0, 50, 99 })
        {
            using var a = fromBin.forward(golden["latents"], golden["encoder_hidden_states"], t);
            using var b = fromSafetensors.forward(golden["latents"], golden["encoder_hidden_states"], t);
            using var equal = a.eq(b);
            Assert.True(equal.all().item<bool>(), $"t={t}: outputs differ between .bin and .safetensors");
            TensorAssert.Close(golden[$"sample_t{t}"], a, 1e-4, 1e-4, $"sample_t{t} from .bin");
        }
    }

    [Fact]
    public void LocatorPrefersSafetensorsAndFallsBackToBin()
    {
        Assert.EndsWith("diffusion_pytorch_model.safetensors", WeightsLocator.Locate(TransformerDir).Single());
        string binOnly = Path.Combine(_dir, "bin-only");
        Directory.CreateDirectory(binOnly);
        File.Copy(Path.Combine(TransformerDir, "diffusion_pytorch_model.bin"), Path.Combine(binOnly, "diffusion_pytorch_model.bin"));
        Assert.EndsWith("diffusion_pytorch_model.bin", WeightsLocator.Locate(binOnly).Single());
    }

    [Fact]
    public void Fp16VariantIsPreferredWhenAskedAndLoadsAsFloat32()
    {
        string dir = Path.Combine(_dir, "variant");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(TransformerDir, "config.json"), Path.Combine(dir, "config.json"));
        File.Copy(Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
        SafeTensorsTestWriter.WriteConverted(Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.fp16.safetensors"), torch.float16);

        string located = WeightsLocator.Locate(dir, "fp16").Single();
        Assert.EndsWith("diffusion_pytorch_model.fp16.safetensors", located);
        Assert.EndsWith("diffusion_pytorch_model.safetensors", WeightsLocator.Locate(dir).Single());

        var golden = Fixtures.LoadGolden("transformer.safetensors");
        using var model = Load(located);
        Assert.All(model.parameters(), p => Assert.Equal(torch.float32, p.dtype));
        using var output = model.forward(golden["latents"], golden["encoder_hidden_states"], 50L);
        // fp16 weights round each parameter to 11 significant bits, so outputs move by ~1e-3.
        TensorAssert.Close(golden["sample_t50"], output, 2e-2, 1e-2, "sample_t50 from fp16 weights");
    }

    [Fact]
    public void ShardedCheckpointIsLoadedThroughItsIndex()
    {
        string dir = Path.Combine(_dir, "sharded");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(TransformerDir, "config.json"), Path.Combine(dir, "config.json"));
        SafeTensorsTestWriter.WriteSharded(Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors"), dir, "diffusion_pytorch_model", shards: 3);
        var files = WeightsLocator.Locate(dir);
        Assert.Equal(3, files.Count);

        var golden = Fixtures.LoadGolden("transformer.safetensors");
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(dir, "config.json"));
        using var model = new Transformer2DModel(config);
        StateDictLoader.Load(model, files);
        using var output = model.forward(golden["latents"], golden["encoder_hidden_states"], 1L);
        TensorAssert.Close(golden["sample_t1"], output, 1e-4, 1e-4, "sample_t1 from shards");
    }

    [Fact]
    public void TruncatedSafetensorsFileFailsWithAClearMessage()
    {
        string file = Path.Combine(_dir, "diffusion_pytorch_model.safetensors");
        byte[] bytes = File.ReadAllBytes(Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors"));
        File.WriteAllBytes(file, bytes[..(bytes.Length / 2)]);
        var ex = Assert.Throws<ModelLoadException>(() => Load(file));
        Assert.Contains(file, ex.Message);
        Assert.Contains("truncated", ex.Message);
    }

    [Fact]
    public void CorruptBinFileFailsWithAClearMessage()
    {
        string file = Path.Combine(_dir, "diffusion_pytorch_model.bin");
        byte[] bytes = File.ReadAllBytes(Path.Combine(TransformerDir, "diffusion_pytorch_model.bin"));
        new Random(3).NextBytes(bytes.AsSpan(0, 4096));
        File.WriteAllBytes(file, bytes);
        var ex = Assert.Throws<ModelLoadException>(() => Load(file));
        Assert.Contains(file, ex.Message);
    }

    [Fact]
    public void RenamedKeyNamesTheFileTheMissingAndTheUnexpectedKey()
    {
        string file = Path.Combine(_dir, "renamed.safetensors");
        SafeTensorsTestWriter.WriteRenamed(Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors"), file, "norm_out.weight", "norm_out.gamma");
        var ex = Assert.Throws<ModelLoadException>(() => Load(file));
        Assert.Contains(file, ex.Message);
        Assert.Contains("missing key(s): 'norm_out.weight' [48]", ex.Message);
        Assert.Contains("unexpected key(s): 'norm_out.gamma' [48]", ex.Message);
    }

    [Fact]
    public void ShapeMismatchNamesTheFileTheKeyAndBothShapes()
    {
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(TransformerDir, "config.json"));
        config.NumVectorEmbeds = 33;
        using var model = new Transformer2DModel(config);
        string file = Path.Combine(TransformerDir, "diffusion_pytorch_model.safetensors");
        var ex = Assert.Throws<ModelLoadException>(() => StateDictLoader.Load(model, [file]));
        Assert.Contains(file, ex.Message);
        Assert.Contains("'latent_image_embedding.emb.weight'", ex.Message);
        Assert.Contains("[65, 48]", ex.Message);
        Assert.Contains("[33, 48]", ex.Message);
    }

    [Fact]
    public void MissingWeightsFileIsAClearError()
    {
        string dir = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(dir);
        var ex = Assert.Throws<ModelLoadException>(() => WeightsLocator.Locate(dir));
        Assert.Contains(dir, ex.Message);
        Assert.Contains("no weights file found", ex.Message);
    }
}
