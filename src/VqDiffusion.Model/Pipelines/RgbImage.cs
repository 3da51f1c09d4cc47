namespace VqDiffusion.Model.Pipelines;

/// <summary>An 8-bit RGB image, row-major, <c>Height × Width × 3</c> bytes.</summary>
public sealed record RgbImage(int Width, int Height, byte[] Rgb);
