namespace VqDiffusion.Model.Pipelines;

/// <summary>One decoded image: 8-bit RGB, row-major, <c>Height × Width × 3</c> bytes.</summary>
public sealed record GeneratedImage(int Index, int PromptIndex, int Width, int Height, byte[] Rgb);
