using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using VqDiffusion.Model.Autoencoders;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Autoencoders;

public sealed class VQModelTests
{
    private readonly ITestOutputHelper _output;

    public VQModelTests(ITestOutputHelper output) => _output = output;

    private static string TinyVqvaeDir => Path.Combine(Fixtures.TinyModel, "vqvae");

    private static VQModelConfig TinyConfig() => ConfigFile.Load<VQModelConfig>(Path.Combine(TinyVqvaeDir, "config.json"));

    private static VQModel LoadTiny(string? weightsDir = null)
    {
        var model = new VQModel(TinyConfig());
        try
        {
            StateDictLoader.Load(model, WeightsLocator.Locate(weightsDir ?? TinyVqvaeDir), new LoadOptions { RenameKey = VQModel.RenameDeprecatedKey });
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    [Fact]
    public void Decode_CodebookEntries_MatchDiffusersGolden()
    {
        var golden = Fixtures.LoadGolden("vq_decode.safetensors");
        try
        {
            using var model = LoadTiny();
            using var noGrad = torch.no_grad();
            Tensor indices = golden["indices"];
            Tensor goldenEmbeddings = golden["embeddings"];
            long batch = indices.shape[0];
            long c = model.Config.EffectiveVqEmbedDim;
            long hw = goldenEmbeddings.shape[2];
            Assert.Equal(hw * goldenEmbeddings.shape[3], indices.shape[1]);

            // embeddings = vqvae.quantize.get_codebook_entry(indices, shape=(B, H, W, vq_embed_dim)): exact.
            using Tensor embeddings = model.quantize.GetCodebookEntry(indices, [batch, hw, hw, c]);
            Assert.Equal(goldenEmbeddings.shape, embeddings.shape);
            double embErr = TensorAssert.Close(goldenEmbeddings, embeddings, 0, 0, "embeddings (exact)", _output);
            Assert.Equal(0.0, embErr);
            Assert.True(Identical(goldenEmbeddings, embeddings), "embeddings are not bit-identical");

            // image = vqvae.decode(embeddings, force_not_quantize=True).sample: atol/rtol 1e-4.
            using Tensor image = model.Decode(embeddings, forceNotQuantize: true);
            TensorAssert.Close(golden["image"], image, 1e-4, 1e-4, "image", _output);

            using Tensor image01 = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1);
            TensorAssert.Close(golden["image_01_nhwc"], image01, 1e-4, 1e-4, "image_01_nhwc", _output);

            // uint8 = (image_01_nhwc * 255).round() (half to even, like numpy): exact expected, |diff| <= 1 on < 0.5%.
            using Tensor uint8 = (image01 * 255).round().to(ScalarType.Byte);
            AssertUint8Pixels(golden["uint8_nhwc"], uint8, "uint8_nhwc");
        }
        finally
        {
            foreach (var t in golden.Values)
            {
                t.Dispose();
            }
        }
    }

    [Fact]
    public void Decode_WithQuantization_SnapsCodebookVectorsToTheirOwnCodes()
    {
        var golden = Fixtures.LoadGolden("vq_decode.safetensors");
        try
        {
            using var model = LoadTiny();
            Tensor indices = golden["indices"];
            Tensor embeddings = golden["embeddings"];

            // Codebook vectors are their own nearest codes: the quantizer gives back the same codes and values
            // (diffusers' straight-through z + (z_q - z) is exact when z_q == z).
            var (zq, codes) = model.quantize.Quantize(embeddings);
            using (zq)
            using (codes)
            {
                TensorAssert.Equal(indices, codes, "quantize indices");
                Assert.True(Identical(embeddings, zq), "quantized embeddings differ from the codebook vectors");
            }

            // decode(h, force_not_quantize=False) quantizes first; for codebook vectors the image is the golden one.
            using Tensor image = model.Decode(embeddings, forceNotQuantize: false);
            TensorAssert.Close(golden["image"], image, 1e-4, 1e-4, "image (force_not_quantize=False)", _output);
        }
        finally
        {
            foreach (var t in golden.Values)
            {
                t.Dispose();
            }
        }
    }

    [Fact]
    public void Quantize_PicksTheNearestCode()
    {
        using var model = LoadTiny();
        using var noGrad = torch.no_grad();
        using var g = new torch.Generator(7);
        using Tensor z = torch.randn([2, 8, 4, 4], generator: g) * 0.05;
        var (zq, codes) = model.quantize.Quantize(z);
        using (zq)
        using (codes)
        {
            Assert.Equal(new long[] { 2, 16 }, codes.shape);
            Assert.Equal(ScalarType.Int64, codes.dtype);

            // Brute force: squared distances to every code.
            using Tensor flat = z.permute(0, 2, 3, 1).reshape(-1, 8);
            using Tensor codebook = model.quantize.CopyCodebook();
            using Tensor d = (flat.unsqueeze(1) - codebook.unsqueeze(0)).pow(2).sum(-1);
            using Tensor expected = d.argmin(1).view(2, 16);
            TensorAssert.Equal(expected, codes, "nearest codes");

            using Tensor lookedUp = model.quantize.GetCodebookEntry(codes, [2, 4, 4, 8]);
            TensorAssert.Close(lookedUp, zq, 1e-6, 0, "z_q vs codebook lookup", _output);
        }
    }

    [Fact]
    public void Encode_32x32Image_GivesLatentGrid()
    {
        using var model = LoadTiny();
        using var g = new torch.Generator(3);
        using Tensor image = torch.rand([2, 3, 32, 32], generator: g) * 2 - 1;
        using Tensor latents = model.Encode(image);

        // 3 blocks -> 2 downsamplings: 32 / 4 = 8; channels = vq_embed_dim.
        Assert.Equal(new long[] { 2, 8, 8, 8 }, latents.shape);
        Assert.True(latents.isfinite().all().item<bool>(), "encoder produced non-finite values");
        Assert.False(latents.requires_grad);

        // Full VQModel.forward path: encode -> quantize -> decode.
        using Tensor reconstructed = model.Decode(latents, forceNotQuantize: false);
        Assert.Equal(new long[] { 2, 3, 32, 32 }, reconstructed.shape);
        Assert.True(reconstructed.isfinite().all().item<bool>(), "decoder produced non-finite values");
    }

    [Fact]
    public void Structure_OfIthqVqvae_MatchesTheRealStateDict()
    {
        var config = ConfigFile.Load<VQModelConfig>(Path.Combine(Fixtures.IthqStructure, "vqvae", "config.json"));
        using var model = new VQModel(config, torch.META);
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Fixtures.IthqStructure, "state_dict.json")));
        JsonElement component = doc.RootElement.GetProperty("components").GetProperty("vqvae");

        var expected = component.GetProperty("keys").EnumerateArray()
            .Select(e => (Key: e.GetProperty("key").GetString()!, Shape: e.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray()))
            .ToList();
        Assert.Equal(303, expected.Count);
        Assert.Equal(component.GetProperty("num_tensors").GetInt32(), expected.Count);

        var actual = model.named_parameters().Select(p => (Key: p.name, Shape: p.parameter.shape)).ToList();
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.Equal(actual.Count, model.state_dict().Count); // no buffers besides the parameters

        var expectedMap = expected.ToDictionary(e => e.Key, e => e.Shape);
        var actualMap = actual.ToDictionary(e => e.Key, e => e.Shape);
        var missing = expectedMap.Keys.Except(actualMap.Keys).ToList();
        var extra = actualMap.Keys.Except(expectedMap.Keys).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0, $"missing: {string.Join(", ", missing)}; extra: {string.Join(", ", extra)}");
        var shapeMismatches = expected
            .Where(e => !e.Shape.SequenceEqual(actualMap[e.Key]))
            .Select(e => $"{e.Key}: expected [{string.Join(", ", e.Shape)}], got [{string.Join(", ", actualMap[e.Key])}]")
            .ToList();
        Assert.True(shapeMismatches.Count == 0, string.Join("; ", shapeMismatches));

        // Same order as diffusers' state_dict.
        Assert.Equal(expected.Select(e => e.Key), actual.Select(e => e.Key));

        long numParameters = model.parameters().Sum(p => p.numel());
        Assert.Equal(component.GetProperty("num_parameters").GetInt64(), numParameters);
        _output.WriteLine($"ITHQ vqvae: {actual.Count} tensors, {numParameters} parameters, key order identical to diffusers");
    }

    [Fact]
    public void RenameDeprecatedKey_MapsTheConversionScriptKeysToTheStateDictKeys()
    {
        using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Fixtures.IthqStructure, "state_dict.json")));
        JsonElement check = doc.RootElement.GetProperty("conversion_script_key_check").GetProperty("vqvae");
        var written = check.GetProperty("written_not_in_state_dict").EnumerateArray().Select(e => e.GetString()!).ToList();
        var notWritten = check.GetProperty("state_dict_not_written").EnumerateArray().Select(e => e.GetString()!).ToHashSet();
        Assert.Equal(56, written.Count);
        Assert.Equal(written.Count, notWritten.Count);

        var renamed = written.Select(VQModel.RenameDeprecatedKey).ToList();
        Assert.All(renamed, k => Assert.Contains(k, notWritten));
        Assert.Equal(notWritten.Count, renamed.Distinct().Count());

        // Keys of the current naming are left alone.
        foreach (JsonElement e in doc.RootElement.GetProperty("components").GetProperty("vqvae").GetProperty("keys").EnumerateArray())
        {
            string key = e.GetProperty("key").GetString()!;
            Assert.Equal(key, VQModel.RenameDeprecatedKey(key));
        }

        Assert.Equal("decoder.mid_block.attentions.0.to_q.weight", VQModel.RenameDeprecatedKey("decoder.mid_block.attentions.0.query.weight"));
        Assert.Equal("encoder.down_blocks.3.attentions.1.to_out.0.bias", VQModel.RenameDeprecatedKey("encoder.down_blocks.3.attentions.1.proj_attn.bias"));
        Assert.Equal("decoder.up_blocks.0.attentions.2.to_k.weight", VQModel.RenameDeprecatedKey("decoder.up_blocks.0.attentions.2.key.weight"));
        Assert.Equal("decoder.up_blocks.0.attentions.2.to_v.bias", VQModel.RenameDeprecatedKey("decoder.up_blocks.0.attentions.2.value.bias"));
        Assert.Equal("quantize.embedding.weight", VQModel.RenameDeprecatedKey("quantize.embedding.weight"));
        Assert.Equal("decoder.key.weight", VQModel.RenameDeprecatedKey("decoder.key.weight"));
    }

    [Fact]
    public void Load_CheckpointWithDeprecatedAttentionNames_GivesTheSameModel()
    {
        string dir = CopyWeightsWithRenamedKeys(DeprecateAttentionKey);
        try
        {
            using var reference = LoadTiny();
            using var deprecated = LoadTiny(dir);
            var a = reference.state_dict();
            var b = deprecated.state_dict();
            Assert.Equal(a.Keys, b.Keys);
            foreach (var (key, value) in a)
            {
                Assert.True(Identical(value, b[key]), $"{key} differs after loading the deprecated names");
            }

            // Without the rename the strict loader names the file and the old keys.
            using var strict = new VQModel(TinyConfig());
            var ex = Assert.Throws<ModelLoadException>(() => StateDictLoader.Load(strict, WeightsLocator.Locate(dir)));
            _output.WriteLine(ex.Message);
            Assert.Contains(Path.Combine(dir, "diffusion_pytorch_model.safetensors"), ex.Message);
            Assert.Contains("40 missing key(s)", ex.Message);
            Assert.Contains(".attentions.0.to_q.weight'", ex.Message);
            Assert.Contains("40 unexpected key(s)", ex.Message);
            Assert.Contains("'decoder.mid_block.attentions.0.query.weight'", ex.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Load_RenamedKey_ThrowsNamingTheFileAndTheKey()
    {
        string dir = CopyWeightsWithRenamedKeys(k => k == "decoder.conv_out.weight" ? "decoder.conv_output.weight" : k);
        try
        {
            using var model = new VQModel(TinyConfig());
            var ex = Assert.Throws<ModelLoadException>(() =>
                StateDictLoader.Load(model, WeightsLocator.Locate(dir), new LoadOptions { RenameKey = VQModel.RenameDeprecatedKey }));
            _output.WriteLine(ex.Message);
            Assert.Contains(Path.Combine(dir, "diffusion_pytorch_model.safetensors"), ex.Message);
            Assert.Contains("'decoder.conv_out.weight'", ex.Message); // missing
            Assert.Contains("'decoder.conv_output.weight'", ex.Message); // unexpected
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Load_WrongCodebookSize_ThrowsNamingBothShapes()
    {
        VQModelConfig config = TinyConfig();
        config.NumVqEmbeddings = 32;
        using var model = new VQModel(config);
        var ex = Assert.Throws<ModelLoadException>(() =>
            StateDictLoader.Load(model, WeightsLocator.Locate(TinyVqvaeDir), new LoadOptions { RenameKey = VQModel.RenameDeprecatedKey }));
        _output.WriteLine(ex.Message);
        Assert.Contains("diffusion_pytorch_model.safetensors", ex.Message);
        Assert.Contains("quantize.embedding.weight", ex.Message);
        Assert.Contains("[64, 8]", ex.Message);
        Assert.Contains("[32, 8]", ex.Message);
    }

    [Fact]
    public void Constructor_UnsupportedConfig_ThrowsModelLoadException()
    {
        VQModelConfig badNorm = TinyConfig();
        badNorm.NormType = "ada_group";
        Assert.Contains("norm_type 'ada_group'", Assert.Throws<ModelLoadException>(() => new VQModel(badNorm, torch.META)).Message);

        VQModelConfig badBlock = TinyConfig();
        badBlock.UpBlockTypes = ["AttnUpDecoderBlock2D", "UpBlock2D", "UpDecoderBlock2D"];
        Assert.Contains("'UpBlock2D'", Assert.Throws<ModelLoadException>(() => new VQModel(badBlock, torch.META)).Message);

        VQModelConfig badAct = TinyConfig();
        badAct.ActFn = "tanh";
        Assert.Contains("act_fn 'tanh'", Assert.Throws<ModelLoadException>(() => new VQModel(badAct, torch.META)).Message);
    }

    [Fact]
    public void MidBlockAddAttentionFalse_LeavesOutTheMidBlockAttentions()
    {
        VQModelConfig config = TinyConfig();
        config.MidBlockAddAttention = false;
        using var model = new VQModel(config, torch.META);
        var keys = model.state_dict().Keys.ToList();
        Assert.DoesNotContain(keys, k => k.Contains("mid_block.attentions", StringComparison.Ordinal));
        Assert.Contains("decoder.mid_block.resnets.1.conv2.weight", keys);
        Assert.Contains("decoder.up_blocks.0.attentions.0.to_q.weight", keys);
    }

    [Fact]
    public void SpatialNormType_HasTheKeysOfDiffusersMoVQAndDecodes()
    {
        // MOVQ_CONFIG of diffusers' scripts/convert_kandinsky_to_diffusers.py, on the meta device.
        var movq = new VQModelConfig
        {
            InChannels = 3,
            OutChannels = 3,
            LatentChannels = 4,
            DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            UpBlockTypes = ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
            NumVqEmbeddings = 16384,
            BlockOutChannels = [128, 256, 256, 512],
            VqEmbedDim = 4,
            LayersPerBlock = 2,
            NormType = "spatial",
        };
        using (var model = new VQModel(movq, torch.META))
        {
            var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            var expectedDecoder = ExpectedMoVQDecoderKeys(movq);
            var actualDecoder = shapes.Keys.Where(k => k.StartsWith("decoder.", StringComparison.Ordinal)).ToHashSet();
            Assert.True(expectedDecoder.SetEquals(actualDecoder),
                $"missing: {string.Join(", ", expectedDecoder.Except(actualDecoder))}; extra: {string.Join(", ", actualDecoder.Except(expectedDecoder))}");
            Assert.Equal(new long[] { 512, 4, 1, 1 }, shapes["decoder.mid_block.attentions.0.spatial_norm.conv_y.weight"]);
            Assert.Equal(new long[] { 128, 4, 1, 1 }, shapes["decoder.conv_norm_out.conv_b.weight"]);
            Assert.Equal(new long[] { 128 }, shapes["decoder.up_blocks.3.resnets.0.norm2.norm_layer.weight"]);
            Assert.Equal(new long[] { 16384, 4 }, shapes["quantize.embedding.weight"]);

            // The encoder keeps plain GroupNorms.
            Assert.Contains("encoder.mid_block.attentions.0.group_norm.weight", shapes.Keys);
            Assert.DoesNotContain(shapes.Keys, k => k.StartsWith("encoder.", StringComparison.Ordinal) && k.Contains("norm_layer", StringComparison.Ordinal));
        }

        // A small spatial model runs end to end (shapes and finiteness; no diffusers golden exists for this norm type).
        var small = new VQModelConfig
        {
            LatentChannels = 4,
            VqEmbedDim = 4,
            NumVqEmbeddings = 16,
            BlockOutChannels = [32, 32],
            DownBlockTypes = ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            UpBlockTypes = ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
            LayersPerBlock = 1,
            NormType = "spatial",
        };
        using var tiny = new VQModel(small);
        using var g = new torch.Generator(1);
        using Tensor image = torch.rand([1, 3, 16, 16], generator: g) * 2 - 1;
        using Tensor latents = tiny.Encode(image);
        Assert.Equal(new long[] { 1, 4, 8, 8 }, latents.shape);
        using Tensor decoded = tiny.Decode(latents, forceNotQuantize: false);
        Assert.Equal(new long[] { 1, 3, 16, 16 }, decoded.shape);
        Assert.True(decoded.isfinite().all().item<bool>());

        VQModelConfig mismatched = small;
        mismatched.VqEmbedDim = 8;
        Assert.Contains("norm_type 'spatial'", Assert.Throws<ModelLoadException>(() => new VQModel(mismatched, torch.META)).Message);
    }

    /// <summary>The decoder keys diffusers' Kandinsky conversion script writes for a spatial-norm VQModel.</summary>
    private static HashSet<string> ExpectedMoVQDecoderKeys(VQModelConfig c)
    {
        var keys = new HashSet<string>();
        void Wb(string p)
        {
            keys.Add(p + ".weight");
            keys.Add(p + ".bias");
        }

        void SpatialNorm(string p)
        {
            Wb(p + ".norm_layer");
            Wb(p + ".conv_y");
            Wb(p + ".conv_b");
        }

        void Resnet(string p, bool shortcut)
        {
            SpatialNorm(p + ".norm1");
            Wb(p + ".conv1");
            SpatialNorm(p + ".norm2");
            Wb(p + ".conv2");
            if (shortcut)
            {
                Wb(p + ".conv_shortcut");
            }
        }

        void Attention(string p)
        {
            SpatialNorm(p + ".spatial_norm");
            Wb(p + ".to_q");
            Wb(p + ".to_k");
            Wb(p + ".to_v");
            Wb(p + ".to_out.0");
        }

        Wb("decoder.conv_in");
        var reversed = c.BlockOutChannels.Reverse().ToArray();
        for (int i = 0; i < reversed.Length; i++)
        {
            int inCh = i == 0 ? reversed[0] : reversed[i - 1];
            for (int r = 0; r < c.LayersPerBlock + 1; r++)
            {
                Resnet($"decoder.up_blocks.{i}.resnets.{r}", r == 0 && inCh != reversed[i]);
                if (c.UpBlockTypes[i] == "AttnUpDecoderBlock2D")
                {
                    Attention($"decoder.up_blocks.{i}.attentions.{r}");
                }
            }

            if (i != reversed.Length - 1)
            {
                Wb($"decoder.up_blocks.{i}.upsamplers.0.conv");
            }
        }

        Attention("decoder.mid_block.attentions.0");
        Resnet("decoder.mid_block.resnets.0", false);
        Resnet("decoder.mid_block.resnets.1", false);
        SpatialNorm("decoder.conv_norm_out");
        Wb("decoder.conv_out");
        return keys;
    }

    private static bool Identical(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape))
        {
            return false;
        }

        using Tensor eq = a.eq(b);
        return eq.all().item<bool>();
    }

    private void AssertUint8Pixels(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        using Tensor diff = (actual.to(ScalarType.Int32) - expected.to(ScalarType.Int32)).abs();
        long maxDiff = diff.max().item<int>();
        long differing = diff.gt(0).sum().item<long>();
        long total = diff.numel();
        _output.WriteLine($"{what}: {differing} of {total} values differ ({100.0 * differing / total:F3}%), max |diff| = {maxDiff}");
        Assert.True(maxDiff <= 1, $"{what}: max |diff| = {maxDiff} > 1");
        Assert.True(differing * 200 < total, $"{what}: {differing} of {total} values differ (allowed < 0.5%)");
    }

    private static string DeprecateAttentionKey(string key)
    {
        foreach (var (current, old) in new[] { (".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.") })
        {
            if (key.Contains(".attentions.", StringComparison.Ordinal) && key.Contains(current, StringComparison.Ordinal))
            {
                return key.Replace(current, old, StringComparison.Ordinal);
            }
        }

        return key;
    }

    /// <summary>Copies the tiny vqvae weights into a temp folder with its safetensors keys renamed (data bytes unchanged).</summary>
    private static string CopyWeightsWithRenamedKeys(Func<string, string> rename)
    {
        string dir = Path.Combine(Path.GetTempPath(), "vqmodel-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        byte[] bytes = File.ReadAllBytes(Path.Combine(TinyVqvaeDir, "diffusion_pytorch_model.safetensors"));
        long headerLength = BitConverter.ToInt64(bytes, 0);
        var header = JsonNode.Parse(bytes.AsSpan(8, (int)headerLength))!.AsObject();
        var renamed = new JsonObject();
        foreach (var (key, value) in header.ToList())
        {
            renamed[key == "__metadata__" ? key : rename(key)] = value?.DeepClone();
        }

        byte[] newHeader = Encoding.UTF8.GetBytes(renamed.ToJsonString());
        int padded = (newHeader.Length + 7) / 8 * 8;
        using (var stream = File.Create(Path.Combine(dir, "diffusion_pytorch_model.safetensors")))
        {
            stream.Write(BitConverter.GetBytes((long)padded));
            stream.Write(newHeader);
            stream.Write(Enumerable.Repeat((byte)' ', padded - newHeader.Length).ToArray());
            stream.Write(bytes.AsSpan(8 + (int)headerLength));
        }

        File.Copy(Path.Combine(TinyVqvaeDir, "config.json"), Path.Combine(dir, "config.json"));
        return dir;
    }
}
