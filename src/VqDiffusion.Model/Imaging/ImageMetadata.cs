namespace VqDiffusion.Model.Imaging;

/// <summary>
/// Generation parameters in image files: written by <see cref="ImageEncoder.Encode(Pipelines.GeneratedImage, ImageFormat, int, GenerationParameters?)"/>
/// (PNG: <c>parameters</c> and <c>vqd-parameters</c> text chunks; JPEG: the <c>parameters</c> text as a COM segment;
/// WebP: it as EXIF UserComment), read back here.
/// </summary>
public static class ImageMetadata
{
    /// <summary>Adds <paramref name="parameters"/> to an encoded image of <paramref name="format"/> (PNG chunks are tEXt where the text is Latin-1, else iTXt).</summary>
    public static byte[] Embed(byte[] encoded, ImageFormat format, GenerationParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        string text = parameters.ToParametersText();
        return format switch
        {
            ImageFormat.Png => PngTextChunks.Insert(encoded, [(GenerationParameters.ParametersKey, text), (GenerationParameters.JsonKey, parameters.ToJson())]),
            ImageFormat.Jpeg => JpegComment.Insert(encoded, text),
            ImageFormat.WebP => WebPExif.Insert(encoded, ExifUserComment.Build(text), parameters.Width, parameters.Height),
            _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
        };
    }

    /// <summary>
    /// The text metadata of an image file: PNG text chunks by keyword; a JPEG's comments as <c>comment</c>; an EXIF
    /// UserComment (WebP) as <c>parameters</c> when it is one, else <c>exif.UserComment</c>. The format is
    /// <c>png</c>, <c>jpeg</c>, <c>webp</c> or null when not recognised.
    /// </summary>
    public static (string? Format, IReadOnlyDictionary<string, string> Texts) Read(byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        var texts = new Dictionary<string, string>(StringComparer.Ordinal);
        if (PngTextChunks.IsPng(data))
        {
            foreach (var (keyword, text) in PngTextChunks.Read(data))
            {
                texts[keyword] = text;
            }

            return ("png", texts);
        }

        if (JpegComment.IsJpeg(data))
        {
            IReadOnlyList<string> comments = JpegComment.Read(data);
            if (comments.Count > 0)
            {
                texts["comment"] = string.Join("\n", comments);
            }

            return ("jpeg", texts);
        }

        if (WebPExif.IsWebP(data))
        {
            if (WebPExif.ReadExif(data) is { } exif && ExifUserComment.Read(exif) is { } comment)
            {
                texts["exif.UserComment"] = comment;
            }

            return ("webp", texts);
        }

        return (null, texts);
    }

    /// <summary>The <c>parameters</c> text wherever the format keeps it (PNG chunk, JPEG comment, EXIF UserComment), or null.</summary>
    public static string? ParametersText(IReadOnlyDictionary<string, string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return texts.TryGetValue(GenerationParameters.ParametersKey, out string? p) ? p
            : texts.TryGetValue("comment", out string? c) ? c
            : texts.TryGetValue("exif.UserComment", out string? e) ? e
            : null;
    }
}
