using System.Buffers.Binary;
using System.Text;

namespace VqDiffusion.Model.Imaging;

/// <summary>
/// An <c>EXIF</c> chunk in a WebP file (RIFF): a simple-format file (<c>VP8 </c> / <c>VP8L</c> only) becomes the
/// extended format with a <c>VP8X</c> chunk whose EXIF flag is set; the EXIF chunk goes after the image data, as the
/// container specification orders it. WebP has no plain-text comment; EXIF is where Pillow and the web UI look.
/// </summary>
public static class WebPExif
{
    private const byte ExifFlag = 0x08;

    public static bool IsWebP(ReadOnlySpan<byte> data) => data.Length >= 12 && data.StartsWith("RIFF"u8) && data[8..12].SequenceEqual("WEBP"u8);

    public static byte[] Insert(byte[] webp, byte[] exif, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(webp);
        ArgumentNullException.ThrowIfNull(exif);
        if (!IsWebP(webp))
        {
            throw new ArgumentException("not a WebP file", nameof(webp));
        }

        var chunks = Chunks(webp).ToList();
        if (chunks.Any(c => c.Type == "EXIF"))
        {
            throw new ArgumentException("the WebP file already has an EXIF chunk", nameof(webp));
        }

        using var body = new MemoryStream(webp.Length + exif.Length + 32);
        body.Write("WEBP"u8);
        if (chunks[0].Type == "VP8X")
        {
            byte[] vp8x = webp.AsSpan(chunks[0].Offset + 8, chunks[0].Length).ToArray();
            vp8x[0] |= ExifFlag;
            WriteChunk(body, "VP8X", vp8x);
            chunks.RemoveAt(0);
        }
        else
        {
            var vp8x = new byte[10];
            vp8x[0] = ExifFlag;
            WriteUInt24(vp8x.AsSpan(4), width - 1);
            WriteUInt24(vp8x.AsSpan(7), height - 1);
            WriteChunk(body, "VP8X", vp8x);
        }

        foreach (var (type, offset, length) in chunks)
        {
            WriteChunk(body, type, webp.AsSpan(offset + 8, length));
        }

        WriteChunk(body, "EXIF", exif);
        byte[] payload = body.ToArray();
        var output = new byte[8 + payload.Length];
        "RIFF"u8.CopyTo(output);
        BinaryPrimitives.WriteUInt32LittleEndian(output.AsSpan(4), (uint)payload.Length);
        payload.CopyTo(output, 8);
        return output;
    }

    /// <summary>The EXIF chunk's bytes, or null.</summary>
    public static byte[]? ReadExif(ReadOnlySpan<byte> webp)
    {
        if (!IsWebP(webp))
        {
            return null;
        }

        foreach (var (type, offset, length) in Chunks(webp.ToArray()))
        {
            if (type == "EXIF")
            {
                return webp.Slice(offset + 8, length).ToArray();
            }
        }

        return null;
    }

    private static IEnumerable<(string Type, int Offset, int Length)> Chunks(byte[] webp)
    {
        int end = Math.Min(webp.Length, 8 + (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(webp.AsSpan(4)), int.MaxValue - 8));
        int at = 12;
        while (at + 8 <= end)
        {
            string type = Encoding.ASCII.GetString(webp, at, 4);
            int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(webp.AsSpan(at + 4));
            if (length < 0 || at + 8 + length > end)
            {
                yield break;
            }

            yield return (type, at, length);
            at += 8 + length + (length & 1);
        }
    }

    private static void WriteChunk(Stream output, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> header = stackalloc byte[8];
        Encoding.ASCII.GetBytes(type, header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], (uint)data.Length);
        output.Write(header);
        output.Write(data);
        if ((data.Length & 1) != 0)
        {
            output.WriteByte(0);
        }
    }

    private static void WriteUInt24(Span<byte> at, int value)
    {
        at[0] = (byte)value;
        at[1] = (byte)(value >> 8);
        at[2] = (byte)(value >> 16);
    }
}
