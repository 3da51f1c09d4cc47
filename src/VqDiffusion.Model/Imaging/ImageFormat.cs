namespace VqDiffusion.Model.Imaging;

/// <summary>Encoded image formats.</summary>
public enum ImageFormat
{
    Png,
    Jpeg,
    WebP,
}
