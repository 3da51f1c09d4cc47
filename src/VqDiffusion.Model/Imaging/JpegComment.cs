using System.Text;

namespace VqDiffusion.Model.Imaging;

/// <summary>
/// The JPEG comment segment (COM, <c>FF FE</c>): written after the SOI marker and the APPn segments that must lead
/// (JFIF, EXIF), UTF-8, at most 65 533 bytes; read back as Pillow's <c>info["comment"]</c> is, which the web UI's
/// reader falls back to when there is no EXIF.
/// </summary>
public static class JpegComment
{
    public const int MaxBytes = 65533;

    public static bool IsJpeg(ReadOnlySpan<byte> data) => data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;

    public static byte[] Insert(byte[] jpeg, string comment)
    {
        ArgumentNullException.ThrowIfNull(jpeg);
        ArgumentNullException.ThrowIfNull(comment);
        if (!IsJpeg(jpeg))
        {
            throw new ArgumentException("not a JPEG", nameof(jpeg));
        }

        byte[] text = Encoding.UTF8.GetBytes(comment);
        if (text.Length > MaxBytes)
        {
            int cut = MaxBytes;
            while (cut > 0 && (text[cut] & 0xC0) == 0x80)
            {
                cut--; // do not split a UTF-8 sequence
            }

            text = text[..cut];
        }

        int at = 2;
        while (at + 4 <= jpeg.Length && jpeg[at] == 0xFF && jpeg[at + 1] is >= 0xE0 and <= 0xEF)
        {
            at += 2 + ((jpeg[at + 2] << 8) | jpeg[at + 3]);
        }

        int length = text.Length + 2;
        byte[] output = new byte[jpeg.Length + 2 + length];
        jpeg.AsSpan(0, at).CopyTo(output);
        output[at] = 0xFF;
        output[at + 1] = 0xFE;
        output[at + 2] = (byte)(length >> 8);
        output[at + 3] = (byte)length;
        text.CopyTo(output, at + 4);
        jpeg.AsSpan(at).CopyTo(output.AsSpan(at + 2 + length));
        return output;
    }

    /// <summary>The COM segments before the image data, decoded as UTF-8.</summary>
    public static IReadOnlyList<string> Read(ReadOnlySpan<byte> jpeg)
    {
        var comments = new List<string>();
        if (!IsJpeg(jpeg))
        {
            return comments;
        }

        int at = 2;
        while (at + 4 <= jpeg.Length && jpeg[at] == 0xFF)
        {
            byte marker = jpeg[at + 1];
            if (marker is 0xDA or 0xD9)
            {
                break; // start of scan / end of image
            }

            int length = (jpeg[at + 2] << 8) | jpeg[at + 3];
            if (length < 2 || at + 2 + length > jpeg.Length)
            {
                break;
            }

            if (marker == 0xFE)
            {
                comments.Add(Encoding.UTF8.GetString(jpeg.Slice(at + 4, length - 2)));
            }

            at += 2 + length;
        }

        return comments;
    }
}
