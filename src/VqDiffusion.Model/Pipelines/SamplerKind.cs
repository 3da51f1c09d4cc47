namespace VqDiffusion.Model.Pipelines;

/// <summary>The sampling family a request is denoised with.</summary>
public enum SamplerKind
{
    /// <summary>diffusers' <c>VQDiffusionPipeline</c> loop (the default): timesteps n−1 … 0, exact with diffusers.</summary>
    Diffusers,

    /// <summary>
    /// The original microsoft/VQ-Diffusion samplers (Improved VQ-Diffusion): all T timesteps, fast inference that skips
    /// steps, high-quality inference and the purity prior; exact with the original code.
    /// </summary>
    VQDiffusion,
}
