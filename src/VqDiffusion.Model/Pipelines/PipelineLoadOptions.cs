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
}
