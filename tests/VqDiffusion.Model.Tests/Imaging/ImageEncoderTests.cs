using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Tests.Imaging;

public sealed class ImageEncoderTests
{
    private static GeneratedImage Gradient(int w, int h)
    {
        var rgb = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++)
            {
                int i = ((y * w) + x) * 3;
                rgb[i] = (byte)(x * 255 / (w - 1));
                rgb[i + 1] = (byte)(y * 255 / (h - 1));
                rgb[i + 2] = (byte)((x + y) % 256);
            }
        }

        return new GeneratedImage(0, 0, w, h, rgb);
    }

    [Fact]
    public void PngIsLosslessAndDeterministic()
    {
        var image = Gradient(33, 17);
        byte[] a = ImageEncoder.Encode(image, ImageFormat.Png);
        byte[] b = ImageEncoder.Encode(image, ImageFormat.Png);
        Assert.Equal(a, b);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, a[..4]);
        var decoded = ImageEncoder.DecodeRgb(a);
        Assert.Equal((33, 17), (decoded.Width, decoded.Height));
        Assert.Equal(image.Rgb, decoded.Rgb);
    }

    [Theory]
    [InlineData(ImageFormat.Jpeg, new byte[] { 0xFF, 0xD8, 0xFF })]
    [InlineData(ImageFormat.WebP, new byte[] { (byte)'R', (byte)'I', (byte)'F', (byte)'F' })]
    public void LossyFormatsEncodeCloseToTheOriginal(ImageFormat format, byte[] magic)
    {
        var image = Gradient(64, 64);
        byte[] data = ImageEncoder.Encode(image, format, 95);
        Assert.Equal(magic, data[..magic.Length]);
        Assert.Equal(data, ImageEncoder.Encode(image, format, 95));
        var decoded = ImageEncoder.DecodeRgb(data);
        Assert.Equal((64, 64), (decoded.Width, decoded.Height));
        double meanAbs = image.Rgb.Zip(decoded.Rgb).Average(p => Math.Abs(p.First - p.Second));
        Assert.True(meanAbs < 6, $"{format}: mean |diff| {meanAbs:F2} too large at quality 95");
        Assert.True(ImageEncoder.Encode(image, format, 10).Length < data.Length, "lower quality should give fewer bytes");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(101)]
    public void QualityOutOfRangeIsRejected(int quality)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ImageEncoder.Encode(Gradient(4, 4), ImageFormat.Jpeg, quality));
    }

    [Theory]
    [InlineData("png", ImageFormat.Png)]
    [InlineData("JPEG", ImageFormat.Jpeg)]
    [InlineData("jpg", ImageFormat.Jpeg)]
    [InlineData("webp", ImageFormat.WebP)]
    public void FormatNamesParse(string name, ImageFormat expected)
    {
        Assert.True(ImageEncoder.TryParse(name, out var format));
        Assert.Equal(expected, format);
        Assert.False(ImageEncoder.TryParse("gif", out _));
    }

    [Fact]
    public void AnImageDeclaringMoreThanTheDecodeLimitIsRejectedFromItsHeader()
    {
        // A PNG whose header declares 30000 x 30000 pixels (3.6 GB as RGBA) in 57 bytes: refused before any pixel
        // buffer is allocated. A 64 x 64 one with the same (empty) data is merely undecodable.
        var bomb = Assert.Throws<ArgumentException>(() => ImageEncoder.DecodeRgb(PngHeaderOnly(30000, 30000)));
        Assert.Contains("declares 30000 × 30000 pixels", bomb.Message);
        var small = Assert.Throws<ArgumentException>(() => ImageEncoder.DecodeRgb(PngHeaderOnly(64, 64)));
        Assert.DoesNotContain("declares", small.Message);

        // A real image within the limit decodes.
        var (width, height, _) = ImageEncoder.DecodeRgb(ImageEncoder.Encode(Gradient(64, 48), ImageFormat.Png));
        Assert.Equal((64, 48), (width, height));
    }

    /// <summary>PNG signature, an IHDR chunk (8-bit RGB) for the given size, an empty IDAT and IEND, with their CRCs.</summary>
    private static byte[] PngHeaderOnly(int width, int height)
    {
        var bytes = new List<byte> { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A };
        byte[] ihdr = [.. BigEndian(width), .. BigEndian(height), 8, 2, 0, 0, 0];
        Chunk(bytes, "IHDR", ihdr);
        Chunk(bytes, "IDAT", []);
        Chunk(bytes, "IEND", []);
        return bytes.ToArray();

        static byte[] BigEndian(int v) => [(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v];

        static void Chunk(List<byte> output, string type, byte[] data)
        {
            output.AddRange(BigEndian(data.Length));
            byte[] typed = [.. System.Text.Encoding.ASCII.GetBytes(type), .. data];
            output.AddRange(typed);
            output.AddRange(BigEndian((int)Crc32(typed)));
        }

        static uint Crc32(byte[] data)
        {
            uint crc = 0xFFFFFFFF;
            foreach (byte b in data)
            {
                crc ^= b;
                for (int k = 0; k < 8; k++)
                {
                    crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
                }
            }

            return ~crc;
        }
    }
}
