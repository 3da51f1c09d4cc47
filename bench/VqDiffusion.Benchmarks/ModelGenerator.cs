using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using VqDiffusion.Model.Autoencoders;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Embeddings;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.TextEncoders;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// Writes a diffusers <c>VQDiffusionPipeline</c> folder with random weights for benchmarks (never commit one):
/// the real ITHQ configs (tests/fixtures/ithq-structure: CLIP ViT-B/32 text tower, the ITHQ VQ-VAE, 4097 classes,
/// 32×32 latents) with the transformer cut to <c>--layers</c> × <c>--heads</c> × <c>--head-dim</c>.
/// Presets: <c>mid</c> (4 layers, 8 × 64 = 512 wide) and <c>ithq</c> (the real 36 × 16 × 88 transformer, ≈ 6 GB).
/// Modules are built on the meta device (no init), so only the written tensors cost time; norms get weight 1, bias 0,
/// matrices N(0, 1/fan_in), so activations stay in a realistic range.
/// </summary>
internal static class ModelGenerator
{
    public static int Run(string repo, string output, string preset, int? layers, int? heads, int? headDim, ulong seed)
    {
        (int l, int h, int d) = preset switch
        {
            "mid" => (4, 8, 64),
            "ithq" => (36, 16, 88),
            _ => throw new ArgumentException($"unknown preset '{preset}' (mid, ithq)"),
        };
        l = layers ?? l;
        h = heads ?? h;
        d = headDim ?? d;

        string structure = Path.Combine(repo, "tests", "fixtures", "ithq-structure");
        Directory.CreateDirectory(output);
        foreach (string component in new[] { "tokenizer", "text_encoder", "transformer", "vqvae", "scheduler", "learned_classifier_free_sampling_embeddings" })
        {
            string dir = Path.Combine(output, component);
            Directory.CreateDirectory(dir);
            foreach (string file in Directory.GetFiles(Path.Combine(structure, component)))
            {
                File.Copy(file, Path.Combine(dir, Path.GetFileName(file)), overwrite: true);
            }
        }

        File.Copy(Path.Combine(structure, "model_index.json"), Path.Combine(output, "model_index.json"), overwrite: true);
        foreach (string vocab in new[] { "vocab.json", "merges.txt" })
        {
            File.Copy(Path.Combine(repo, "tests", "fixtures", "clip-vocab", vocab), Path.Combine(output, "tokenizer", vocab), overwrite: true);
        }

        string transformerConfigPath = Path.Combine(output, "transformer", "config.json");
        var transformerJson = JsonNode.Parse(File.ReadAllText(transformerConfigPath))!.AsObject();
        transformerJson["num_layers"] = l;
        transformerJson["num_attention_heads"] = h;
        transformerJson["attention_head_dim"] = d;
        File.WriteAllText(transformerConfigPath, transformerJson.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        torch.manual_seed((long)(seed & long.MaxValue));
        long total = 0;
        var meta = torch.META;
        using (var text = new CLIPTextModel(ConfigFile.Load<CLIPTextConfig>(Path.Combine(output, "text_encoder", "config.json")), meta))
        {
            total += Write(Path.Combine(output, "text_encoder", "model.safetensors"), text);
        }

        using (var transformer = new Transformer2DModel(ConfigFile.Load<Transformer2DModelConfig>(transformerConfigPath), meta))
        {
            total += Write(Path.Combine(output, "transformer", "diffusion_pytorch_model.safetensors"), transformer);
        }

        using (var vqvae = new VQModel(ConfigFile.Load<VQModelConfig>(Path.Combine(output, "vqvae", "config.json")), meta))
        {
            total += Write(Path.Combine(output, "vqvae", "diffusion_pytorch_model.safetensors"), vqvae);
        }

        var cfConfig = ConfigFile.Load<LearnedClassifierFreeSamplingEmbeddingsConfig>(
            Path.Combine(output, "learned_classifier_free_sampling_embeddings", "config.json"));
        using (var cf = new LearnedClassifierFreeSamplingEmbeddings(cfConfig, meta))
        {
            total += Write(Path.Combine(output, "learned_classifier_free_sampling_embeddings", "diffusion_pytorch_model.safetensors"), cf);
        }

        Console.WriteLine($"wrote {output}: transformer {l} layers × {h} heads × {d} (inner {h * d}), {total / 1e6:F1} M float32 parameters ({total * 4 / 1e9:F2} GB)");
        return 0;
    }

    private static long Write(string path, nn.Module module)
    {
        var entries = module.state_dict().ToList();
        var header = new Dictionary<string, object>();
        long offset = 0;
        long count = 0;
        foreach (var (name, t) in entries)
        {
            long bytes = t.numel() * 4;
            header[name] = new { dtype = "F32", shape = t.shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
            count += t.numel();
        }

        // Padded with spaces so the data starts 8-byte aligned, as the safetensors library writes it (the loader
        // memory-maps aligned tensors).
        string text = JsonSerializer.Serialize(header);
        text += new string(' ', (8 - ((8 + Encoding.UTF8.GetByteCount(text)) % 8)) % 8);
        byte[] json = Encoding.UTF8.GetBytes(text);
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        stream.Write(BitConverter.GetBytes((long)json.Length));
        stream.Write(json);
        foreach (var (name, t) in entries)
        {
            using var scope = torch.NewDisposeScope();
            Tensor value = RandomValue(name, t.shape);
            stream.Write(value.contiguous().bytes);
        }

        return count;
    }

    private static Tensor RandomValue(string name, long[] shape)
    {
        bool isNorm = name.Contains("norm", StringComparison.Ordinal) || name.Contains("ln_", StringComparison.Ordinal) || name.Contains("layer_norm", StringComparison.Ordinal);
        if (name.EndsWith("bias", StringComparison.Ordinal))
        {
            return torch.zeros(shape, float32);
        }

        if (shape.Length == 1)
        {
            return isNorm ? torch.ones(shape, float32) : torch.randn(shape, float32) * 0.02;
        }

        long fanIn = shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        return torch.randn(shape, float32) / Math.Sqrt(fanIn);
    }
}
