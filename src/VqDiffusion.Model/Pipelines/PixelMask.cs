namespace VqDiffusion.Model.Pipelines;

/// <summary>An image-space mask, <c>Height × Width</c> row-major; true = masked (regenerate).</summary>
public sealed record PixelMask(int Width, int Height, bool[] Masked);
