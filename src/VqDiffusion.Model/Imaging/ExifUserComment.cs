using System.Buffers.Binary;
using System.Text;

namespace VqDiffusion.Model.Imaging;

/// <summary>
/// A minimal EXIF block (a little-endian TIFF structure) holding one <c>UserComment</c> (tag 0x9286 in the Exif IFD),
/// encoded as piexif's <c>UserComment.dump(text, encoding="unicode")</c> does (<c>UNICODE\0</c> then UTF-16BE): where the
/// web UI writes and reads its <c>parameters</c> in JPEG and WebP files.
/// </summary>
public static class ExifUserComment
{
    private const ushort ExifIfdPointerTag = 0x8769;
    private const ushort UserCommentTag = 0x9286;
    private static readonly byte[] UnicodePrefix = "UNICODE\0"u8.ToArray();
    private static readonly byte[] AsciiPrefix = "ASCII\0\0\0"u8.ToArray();

    /// <summary>The TIFF bytes (starting with <c>II*\0</c>, no <c>Exif\0\0</c> prefix).</summary>
    public static byte[] Build(string comment)
    {
        ArgumentNullException.ThrowIfNull(comment);
        byte[] value = [.. UnicodePrefix, .. Encoding.BigEndianUnicode.GetBytes(comment)];
        const int ifd0 = 8;
        const int exifIfd = ifd0 + 2 + 12 + 4;
        const int data = exifIfd + 2 + 12 + 4;
        var tiff = new byte[data + value.Length];
        Span<byte> s = tiff;
        s[0] = (byte)'I';
        s[1] = (byte)'I';
        BinaryPrimitives.WriteUInt16LittleEndian(s[2..], 42);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], ifd0);
        WriteIfd(s[ifd0..], ExifIfdPointerTag, type: 4, count: 1, value: exifIfd);
        WriteIfd(s[exifIfd..], UserCommentTag, type: 7, count: (uint)value.Length, value: data);
        value.CopyTo(s[data..]);
        return tiff;
    }

    /// <summary>The UserComment of an EXIF block (with or without the <c>Exif\0\0</c> prefix); null when it has none.</summary>
    public static string? Read(ReadOnlySpan<byte> exif)
    {
        if (exif.StartsWith("Exif\0\0"u8))
        {
            exif = exif[6..];
        }

        if (exif.Length < 8 || !(exif.StartsWith("II"u8) || exif.StartsWith("MM"u8)))
        {
            return null;
        }

        bool little = exif[0] == (byte)'I';
        uint U32(ReadOnlySpan<byte> s) => little ? BinaryPrimitives.ReadUInt32LittleEndian(s) : BinaryPrimitives.ReadUInt32BigEndian(s);
        ushort U16(ReadOnlySpan<byte> s) => little ? BinaryPrimitives.ReadUInt16LittleEndian(s) : BinaryPrimitives.ReadUInt16BigEndian(s);
        (uint Count, uint Value)? Find(ReadOnlySpan<byte> tiff, uint ifd, ushort tag)
        {
            if (ifd + 2 > tiff.Length)
            {
                return null;
            }

            int entries = U16(tiff[(int)ifd..]);
            for (int i = 0; i < entries; i++)
            {
                int at = (int)ifd + 2 + (12 * i);
                if (at + 12 > tiff.Length)
                {
                    return null;
                }

                if (U16(tiff[at..]) == tag)
                {
                    return (U32(tiff[(at + 4)..]), U32(tiff[(at + 8)..]));
                }
            }

            return null;
        }

        if (Find(exif, U32(exif[4..]), ExifIfdPointerTag) is not { } pointer || Find(exif, pointer.Value, UserCommentTag) is not { } comment)
        {
            return null;
        }

        if (comment.Count < 8 || comment.Count > exif.Length)
        {
            return null;
        }

        // An UNDEFINED value of at most 4 bytes is inline; a comment has at least its 8-byte prefix, so it is at an offset.
        if (comment.Value + comment.Count > exif.Length)
        {
            return null;
        }

        ReadOnlySpan<byte> value = exif.Slice((int)comment.Value, (int)comment.Count);
        ReadOnlySpan<byte> body = value[8..];
        return value[..8].SequenceEqual(UnicodePrefix) ? Encoding.BigEndianUnicode.GetString(body)
            : value[..8].SequenceEqual(AsciiPrefix) ? Encoding.ASCII.GetString(body)
            : Encoding.UTF8.GetString(body).TrimEnd('\0');
    }

    private static void WriteIfd(Span<byte> at, ushort tag, ushort type, uint count, uint value)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(at, 1);
        BinaryPrimitives.WriteUInt16LittleEndian(at[2..], tag);
        BinaryPrimitives.WriteUInt16LittleEndian(at[4..], type);
        BinaryPrimitives.WriteUInt32LittleEndian(at[6..], count);
        BinaryPrimitives.WriteUInt32LittleEndian(at[10..], value);
        BinaryPrimitives.WriteUInt32LittleEndian(at[14..], 0); // no next IFD
    }
}
