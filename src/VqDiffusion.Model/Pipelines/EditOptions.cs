namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// Editing and inpainting: a source (a token grid per image, or one image encoded by the VQ-VAE) and either a
/// <see cref="Strength"/> (noise the source to t = ⌊T · strength⌋ − 1 and denoise from there, the original's
/// <c>filter_ratio</c>), a mask of the tokens to regenerate (the others stay the source's after every step), or both.
/// </summary>
public sealed record EditOptions
{
    /// <summary>Source tokens, [images, H·W] row-major (prompt-major image order), each 0..num_vector_embeds − 2.</summary>
    public IReadOnlyList<long>? SourceTokens { get; init; }

    /// <summary>A source image of the model's output size, encoded and quantised to the source tokens of every image.</summary>
    public RgbImage? SourceImage { get; init; }

    /// <summary>In (0, 1], at least 1/T; null = no noising (then a mask is required).</summary>
    public double? Strength { get; init; }

    /// <summary>Tokens to regenerate over the latent grid, H·W row-major, the same for every image.</summary>
    public IReadOnlyList<bool>? Mask { get; init; }

    /// <summary>An image-space mask of the output size: a token is regenerated when any pixel of its patch is masked.</summary>
    public PixelMask? MaskImage { get; init; }
}
