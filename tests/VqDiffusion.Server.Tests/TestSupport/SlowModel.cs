using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Transformers;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// A pipeline folder whose denoising steps take a long time on a CPU: the tiny model's text encoder, VQ-VAE and
/// scheduler with its transformer widened to a <c>grid</c>×<c>grid</c> latent grid (64×64 = 4096 tokens, 256×256
/// images) and random weights (N(0, 1/fan_in), norms 1, biases 0, as the benchmarks' model generator writes them).
/// Written into a temporary folder; never committed.
/// </summary>
public static class SlowModel
{
    public static void Write(string output, int grid = 64, int layers = 2, long seed = 8)
    {
        CopyDirectory(Fixtures.TinyModel, output);
        string transformerDir = Path.Combine(output, "transformer");
        foreach (string weights in Directory.GetFiles(transformerDir, "diffusion_pytorch_model.*"))
        {
            File.Delete(weights);
        }

        string configPath = Path.Combine(transformerDir, "config.json");
        JsonObject config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["sample_size"] = grid;
        config["num_layers"] = layers;
        File.WriteAllText(configPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        torch.manual_seed(seed);
        using var transformer = new Transformer2DModel(ConfigFile.Load<Transformer2DModelConfig>(configPath), torch.META);
        var tensors = new List<(string Name, torch.Tensor Tensor)>();
        foreach (var (name, meta) in transformer.state_dict())
        {
            tensors.Add((name, RandomValue(name, meta.shape)));
        }

        SafeTensorsTestWriter.Write(Path.Combine(transformerDir, "diffusion_pytorch_model.safetensors"), tensors);
        foreach (var (_, t) in tensors)
        {
            t.Dispose();
        }
    }

    private static torch.Tensor RandomValue(string name, long[] shape)
    {
        if (name.EndsWith("bias", StringComparison.Ordinal))
        {
            return torch.zeros(shape, torch.float32);
        }

        if (shape.Length == 1)
        {
            return name.Contains("norm", StringComparison.Ordinal) ? torch.ones(shape, torch.float32) : torch.randn(shape, torch.float32) * 0.02;
        }

        long fanIn = shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        using torch.Tensor normal = torch.randn(shape, torch.float32);
        return normal / Math.Sqrt(fanIn);
    }

    private static void CopyDirectory(string source, string target)
    {
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)), overwrite: true);
        }

        foreach (string dir in Directory.GetDirectories(source))
        {
            CopyDirectory(dir, Path.Combine(target, Path.GetFileName(dir)));
        }
    }
}
