using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace VqDiffusion.Model.Imaging;

/// <summary>
/// PNG text chunks: written right after <c>IHDR</c> as <c>tEXt</c> when the text is Latin-1 (as Pillow's
/// <c>PngInfo.add_text</c> does), else as uncompressed <c>iTXt</c> (UTF-8); read from <c>tEXt</c>, <c>iTXt</c> and
/// <c>zTXt</c>.
/// </summary>
public static class PngTextChunks
{
    private static readonly byte[] Signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
    private static readonly Encoding Latin1 = Encoding.Latin1;

    public static bool IsPng(ReadOnlySpan<byte> data) => data.Length >= 8 && data[..8].SequenceEqual(Signature);

    /// <summary>The PNG with <paramref name="entries"/> (keyword, text) inserted after its IHDR chunk.</summary>
    public static byte[] Insert(byte[] png, IEnumerable<(string Keyword, string Text)> entries)
    {
        ArgumentNullException.ThrowIfNull(png);
        if (!IsPng(png) || png.Length < 33 || Encoding.ASCII.GetString(png, 12, 4) != "IHDR")
        {
            throw new ArgumentException("not a PNG starting with IHDR", nameof(png));
        }

        int afterIhdr = 8 + 12 + BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(8));
        using var output = new MemoryStream(png.Length + 1024);
        output.Write(png, 0, afterIhdr);
        foreach (var (keyword, text) in entries)
        {
            CheckKeyword(keyword);
            bool latin1 = text.All(c => c <= 0xFF);
            byte[] body = latin1
                ? [.. Latin1.GetBytes(keyword), 0, .. Latin1.GetBytes(text)]
                : [.. Latin1.GetBytes(keyword), 0, 0, 0, 0, 0, .. Encoding.UTF8.GetBytes(text)]; // iTXt: no compression, no language, no translated keyword
            WriteChunk(output, latin1 ? "tEXt" : "iTXt", body);
        }

        output.Write(png, afterIhdr, png.Length - afterIhdr);
        return output.ToArray();
    }

    /// <summary>Every text chunk of a PNG, in file order (a later duplicate keyword wins in the dictionary).</summary>
    public static IReadOnlyList<(string Keyword, string Text)> Read(ReadOnlySpan<byte> png)
    {
        var entries = new List<(string, string)>();
        if (!IsPng(png))
        {
            return entries;
        }

        int offset = 8;
        while (offset + 12 <= png.Length)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(png[offset..]);
            if (length < 0 || offset + 12 + length > png.Length)
            {
                break;
            }

            string type = Encoding.ASCII.GetString(png.Slice(offset + 4, 4));
            ReadOnlySpan<byte> body = png.Slice(offset + 8, length);
            int zero = body.IndexOf((byte)0);
            if (zero > 0)
            {
                string keyword = Latin1.GetString(body[..zero]);
                ReadOnlySpan<byte> rest = body[(zero + 1)..];
                switch (type)
                {
                    case "tEXt":
                        entries.Add((keyword, Latin1.GetString(rest)));
                        break;
                    case "zTXt" when rest.Length >= 1:
                        entries.Add((keyword, Latin1.GetString(Inflate(rest[1..]))));
                        break;
                    case "iTXt" when rest.Length >= 2:
                        bool compressed = rest[0] == 1;
                        ReadOnlySpan<byte> tail = rest[2..];
                        int language = tail.IndexOf((byte)0);
                        if (language < 0)
                        {
                            break;
                        }

                        tail = tail[(language + 1)..];
                        int translated = tail.IndexOf((byte)0);
                        if (translated < 0)
                        {
                            break;
                        }

                        tail = tail[(translated + 1)..];
                        entries.Add((keyword, Encoding.UTF8.GetString(compressed ? Inflate(tail) : tail)));
                        break;
                }
            }

            if (type == "IEND")
            {
                break;
            }

            offset += 12 + length;
        }

        return entries;
    }

    private static byte[] Inflate(ReadOnlySpan<byte> data)
    {
        using var input = new MemoryStream(data.ToArray());
        using var zlib = new ZLibStream(input, CompressionMode.Decompress);
        using var output = new MemoryStream();
        zlib.CopyTo(output);
        return output.ToArray();
    }

    private static void CheckKeyword(string keyword)
    {
        if (keyword.Length is < 1 or > 79 || keyword.Any(c => c is < ' ' or > '~') || keyword.StartsWith(' ') || keyword.EndsWith(' '))
        {
            throw new ArgumentException($"'{keyword}' is not a PNG text keyword (1-79 printable Latin-1 characters).", nameof(keyword));
        }
    }

    private static void WriteChunk(Stream output, string type, byte[] body)
    {
        Span<byte> header = stackalloc byte[8];
        BinaryPrimitives.WriteInt32BigEndian(header, body.Length);
        Encoding.ASCII.GetBytes(type, header[4..]);
        output.Write(header);
        output.Write(body);
        uint crc = Crc32.Update(Crc32.Update(0xFFFFFFFFu, header[4..]), body) ^ 0xFFFFFFFFu;
        Span<byte> trailer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(trailer, crc);
        output.Write(trailer);
    }
}
