using SkiaSharp;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Imaging;

/// <summary>Encodes/decodes 8-bit RGB images with SkiaSharp (PNG lossless; JPEG and WebP lossy).</summary>
public static class ImageEncoder
{
    public const int DefaultQuality = 90;

    public static string MimeType(ImageFormat format) => format switch
    {
        ImageFormat.Png => "image/png",
        ImageFormat.Jpeg => "image/jpeg",
        ImageFormat.WebP => "image/webp",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    public static string FileExtension(ImageFormat format) => format switch
    {
        ImageFormat.Png => "png",
        ImageFormat.Jpeg => "jpg",
        ImageFormat.WebP => "webp",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    /// <summary>Parses "png", "jpeg"/"jpg" or "webp" (case-insensitive).</summary>
    public static bool TryParse(string? name, out ImageFormat format)
    {
        switch (name?.Trim().ToLowerInvariant())
        {
            case "png":
                format = ImageFormat.Png;
                return true;
            case "jpeg":
            case "jpg":
                format = ImageFormat.Jpeg;
                return true;
            case "webp":
                format = ImageFormat.WebP;
                return true;
            default:
                format = default;
                return false;
        }
    }

    /// <summary>
    /// Encodes an image. <paramref name="quality"/> (1..100) applies to JPEG and WebP; PNG is lossless
    /// and ignores it. The same pixels always give the same bytes.
    /// </summary>
    public static byte[] Encode(GeneratedImage image, ImageFormat format, int quality = DefaultQuality) => Encode(image, format, quality, null);

    /// <summary>
    /// Encodes an image carrying its generation parameters (<see cref="ImageMetadata.Embed"/>: PNG text chunks, a JPEG
    /// comment, WebP EXIF); null = none. The same pixels and parameters always give the same bytes.
    /// </summary>
    public static byte[] Encode(GeneratedImage image, ImageFormat format, int quality, GenerationParameters? parameters)
    {
        byte[] encoded = EncodePixels(image, format, quality);
        return parameters is null ? encoded : ImageMetadata.Embed(encoded, format, parameters);
    }

    private static byte[] EncodePixels(GeneratedImage image, ImageFormat format, int quality)
    {
        if (quality < 1 || quality > 100)
        {
            throw new ArgumentOutOfRangeException(nameof(quality), quality, "quality must be between 1 and 100.");
        }

        int pixels = image.Width * image.Height;
        if (image.Rgb.Length != pixels * 3)
        {
            throw new ArgumentException($"image has {image.Rgb.Length} bytes, expected {pixels * 3} for {image.Width}x{image.Height} RGB.", nameof(image));
        }

        var rgba = new byte[pixels * 4];
        for (int i = 0; i < pixels; i++)
        {
            rgba[(i * 4) + 0] = image.Rgb[(i * 3) + 0];
            rgba[(i * 4) + 1] = image.Rgb[(i * 3) + 1];
            rgba[(i * 4) + 2] = image.Rgb[(i * 3) + 2];
            rgba[(i * 4) + 3] = 255;
        }

        var info = new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, SKAlphaType.Opaque);
        using SKImage skImage = SKImage.FromPixelCopy(info, rgba, info.RowBytes)
            ?? throw new InvalidOperationException("SkiaSharp could not create an image from the pixels.");
        SKEncodedImageFormat skFormat = format switch
        {
            ImageFormat.Png => SKEncodedImageFormat.Png,
            ImageFormat.Jpeg => SKEncodedImageFormat.Jpeg,
            ImageFormat.WebP => SKEncodedImageFormat.Webp,
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
        };
        using SKData data = skImage.Encode(skFormat, format == ImageFormat.Png ? 100 : quality)
            ?? throw new InvalidOperationException($"SkiaSharp could not encode {format}.");
        return data.ToArray();
    }

    /// <summary>
    /// Largest image <see cref="DecodeRgb"/> decodes (4096 × 4096 pixels): a few kilobytes of PNG can declare a
    /// 65535 × 65535 image whose decode would take gigabytes, so the size is read from the header first.
    /// </summary>
    public const long MaxDecodePixels = 4096L * 4096;

    /// <summary>
    /// Decodes an encoded image (PNG, JPEG, WebP ...) back to 8-bit RGB; throws <see cref="ArgumentException"/> for
    /// bytes that are not a decodable image or declare more than <see cref="MaxDecodePixels"/> pixels.
    /// </summary>
    public static (int Width, int Height, byte[] Rgb) DecodeRgb(byte[] encoded)
    {
        using (var data = SKData.CreateCopy(encoded))
        using (SKCodec? codec = SKCodec.Create(data))
        {
            if (codec is null)
            {
                throw new ArgumentException("not a decodable image", nameof(encoded));
            }

            if ((long)codec.Info.Width * codec.Info.Height > MaxDecodePixels)
            {
                throw new ArgumentException($"the image declares {codec.Info.Width} × {codec.Info.Height} pixels, more than {MaxDecodePixels}", nameof(encoded));
            }
        }

        using SKBitmap decoded = SKBitmap.Decode(encoded) ?? throw new ArgumentException("not a decodable image", nameof(encoded));
        var info = new SKImageInfo(decoded.Width, decoded.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        if (!decoded.CopyTo(bitmap, SKColorType.Rgba8888))
        {
            using var canvas = new SKCanvas(bitmap);
            canvas.DrawBitmap(decoded, 0, 0);
        }

        byte[] rgba = bitmap.Bytes;
        int pixels = decoded.Width * decoded.Height;
        var rgb = new byte[pixels * 3];
        for (int i = 0; i < pixels; i++)
        {
            rgb[(i * 3) + 0] = rgba[(i * 4) + 0];
            rgb[(i * 3) + 1] = rgba[(i * 4) + 1];
            rgb[(i * 3) + 2] = rgba[(i * 4) + 2];
        }

        return (decoded.Width, decoded.Height, rgb);
    }

    /// <summary>
    /// Decodes an encoded image (PNG …) to an 8-bit RGB <see cref="RgbImage"/>; throws <see cref="ArgumentException"/>
    /// for bytes that are not a decodable image.
    /// </summary>
    public static RgbImage DecodeImage(byte[] encoded)
    {
        var (width, height, rgb) = DecodeRgb(encoded);
        return new RgbImage(width, height, rgb);
    }

    /// <summary>
    /// Decodes an inpainting mask image: a pixel is masked (regenerate) where any of its red, green or blue values is
    /// at least 128 (white on black; alpha is ignored).
    /// </summary>
    public static PixelMask DecodeMask(byte[] encoded)
    {
        var (width, height, rgb) = DecodeRgb(encoded);
        var masked = new bool[width * height];
        for (int i = 0; i < masked.Length; i++)
        {
            masked[i] = rgb[i * 3] >= MaskThreshold || rgb[(i * 3) + 1] >= MaskThreshold || rgb[(i * 3) + 2] >= MaskThreshold;
        }

        return new PixelMask(width, height, masked);
    }

    /// <summary>A mask pixel with any channel at or above this value is masked.</summary>
    public const byte MaskThreshold = 128;
}
