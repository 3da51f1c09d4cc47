using TorchSharp;

namespace VqDiffusion.Model.Pipelines;

/// <summary>How to load a diffusers model folder.</summary>
public sealed record PipelineLoadOptions
{
    /// <summary>Device for all modules (default CPU). Random draws always come from a CPU generator.</summary>
    public torch.Device? Device { get; init; }

    /// <summary>Parameter dtype: float32 (default), float16 or bfloat16. Weights are converted on load.</summary>
    public torch.ScalarType DType { get; init; } = torch.ScalarType.Float32;

    /// <summary>Weights variant to prefer, e.g. "fp16" for <c>diffusion_pytorch_model.fp16.safetensors</c>.</summary>
    public string? Variant { get; init; }

    /// <summary>Parses a dtype name: float32/fp32, float16/fp16, bfloat16/bf16 (case-insensitive).</summary>
    public static bool TryParseDType(string? name, out torch.ScalarType dtype)
    {
        switch (name?.Trim().ToLowerInvariant())
        {
            case "float32" or "fp32":
                dtype = torch.ScalarType.Float32;
                return true;
            case "float16" or "fp16":
                dtype = torch.ScalarType.Float16;
                return true;
            case "bfloat16" or "bf16":
                dtype = torch.ScalarType.BFloat16;
                return true;
            default:
                dtype = default;
                return false;
        }
    }

    /// <summary>The name of a dtype as the API reports it (float32, float16, bfloat16, ...).</summary>
    public static string DTypeName(torch.ScalarType dtype) => Loading.ScalarTypes.Name(dtype);
}
