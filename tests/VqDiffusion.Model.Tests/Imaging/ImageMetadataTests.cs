using System.Buffers.Binary;
using System.Text;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Tests.Imaging;

public sealed class ImageMetadataTests
{
    private static GeneratedImage Gradient(int w, int h)
    {
        var rgb = new byte[w * h * 3];
        for (int i = 0; i < rgb.Length; i++)
        {
            rgb[i] = (byte)((i * 7) + (i / (w * 3)));
        }

        return new GeneratedImage(1, 0, w, h, rgb);
    }

    private static GenerationParameters Parameters(string prompt = "a photo of a cat, sitting") => GenerationParameters.For(
        new GenerationRequest
        {
            Prompts = [prompt, "a red car"],
            NumInferenceSteps = 10,
            GuidanceScale = 5f,
            TruncationRate = 0.86f,
            NumImagesPerPrompt = 2,
            Seed = 42,
            Sampler = new SamplerOptions { Kind = SamplerKind.VQDiffusion, Speed = 2, Prior = UnmaskPrior.Purity, PriorWeight = 1.5, ClassifierFreeEmbeddings = ClassifierFreeEmbeddings.EmptyPrompt },
            Edit = new EditOptions { SourceTokens = [1, 2, 3], Strength = 0.5 },
        },
        42,
        Gradient(32, 24),
        new ModelProvenance("microsoft/vq-diffusion-ithq", "main", "0123456789abcdef0123456789abcdef01234567"));

    [Fact]
    public void TheParametersTextFollowsTheWebUiConventionAndParsesBack()
    {
        GenerationParameters p = Parameters();
        string text = p.ToParametersText();
        string[] lines = text.Split('\n');
        Assert.Equal("a photo of a cat, sitting", lines[0]);
        Assert.Equal("Negative prompt: ", lines[1]); // guidance against the empty prompt
        Assert.StartsWith("Steps: 10, Sampler: vq-diffusion, CFG scale: 5, Seed: 42, Size: 32x24, Model: microsoft/vq-diffusion-ithq, Model revision: main, ", lines[2]);

        var (prompt, negative, settings) = GenerationParameters.ParseText(text);
        Assert.Equal("a photo of a cat, sitting", prompt);
        Assert.Equal(string.Empty, negative);
        Assert.Equal("10", settings["Steps"]);
        Assert.Equal("42", settings["Seed"]);
        Assert.Equal("0.86", settings["Truncation rate"]);
        Assert.Equal("0123456789abcdef0123456789abcdef01234567", settings["Model commit"]);
        Assert.Equal(("4", "1"), (settings["Batch size"], settings["Batch pos"]));
        Assert.Equal(("2", "purity", "1.5"), (settings["Speed"], settings["Prior"], settings["Prior weight"]));
        Assert.Equal(("tokens", "0.5"), (settings["Edit source"], settings["Denoising strength"]));
        Assert.Equal(ModelProvenance.Software, settings["Version"]);

        GenerationParameters back = GenerationParameters.FromJson(p.ToJson())!;
        Assert.Equal(p.ToParametersText(), back.ToParametersText());
        Assert.Equal(p.Prompts, back.Prompts);
    }

    [Fact]
    public void AValueWithACommaOrColonIsQuotedAsJson()
    {
        GenerationParameters p = Parameters() with { Model = "my model: v2, final" };
        Assert.Contains("Model: \"my model: v2, final\",", p.ToParametersText());
        Assert.Equal("my model: v2, final", GenerationParameters.ParseText(p.ToParametersText()).Settings["Model"]);
    }

    [Fact]
    public void APngCarriesTheTextAndTheJsonChunksAfterIhdrWithValidCrcsAndTheSamePixels()
    {
        GeneratedImage image = Gradient(32, 24);
        GenerationParameters p = Parameters();
        byte[] plain = ImageEncoder.Encode(image, ImageFormat.Png);
        byte[] png = ImageEncoder.Encode(image, ImageFormat.Png, ImageEncoder.DefaultQuality, p);
        Assert.Equal(png, ImageEncoder.Encode(image, ImageFormat.Png, ImageEncoder.DefaultQuality, p)); // deterministic
        Assert.Equal(ImageEncoder.DecodeRgb(plain).Rgb, ImageEncoder.DecodeRgb(png).Rgb);
        Assert.Equal(image.Rgb, ImageEncoder.DecodeRgb(png).Rgb);

        var chunks = Chunks(png);
        Assert.Equal(new[] { "IHDR", "tEXt", "tEXt" }, chunks.Take(3).Select(c => c.Type));
        Assert.Equal(Chunks(plain).Select(c => c.Type), chunks.Where((_, i) => i is not (1 or 2)).Select(c => c.Type));
        foreach (var (type, data, crc) in chunks)
        {
            uint computed = Crc32.Update(Crc32.Update(0xFFFFFFFFu, Encoding.ASCII.GetBytes(type)), data) ^ 0xFFFFFFFFu;
            Assert.Equal(crc, computed); // our CRC agrees with libpng's on Skia's chunks, and ours are right
        }

        var (format, texts) = ImageMetadata.Read(png);
        Assert.Equal("png", format);
        Assert.Equal(p.ToParametersText(), texts[GenerationParameters.ParametersKey]);
        Assert.Equal(p.ToJson(), texts[GenerationParameters.JsonKey]);
        Assert.Equal("parameters\0" + p.ToParametersText(), Encoding.Latin1.GetString(chunks[1].Data));
    }

    [Fact]
    public void ANonLatinPromptGoesIntoAnInternationalTextChunk()
    {
        GenerationParameters p = Parameters("一只猫 🐱");
        byte[] png = ImageEncoder.Encode(Gradient(8, 8), ImageFormat.Png, ImageEncoder.DefaultQuality, p);
        Assert.Equal(new[] { "IHDR", "iTXt", "iTXt" }, Chunks(png).Take(3).Select(c => c.Type));
        Assert.StartsWith("一只猫 🐱\n", ImageMetadata.Read(png).Texts[GenerationParameters.ParametersKey]);
    }

    [Fact]
    public void AJpegCarriesTheTextAsACommentAfterItsApplicationSegments()
    {
        GeneratedImage image = Gradient(32, 24);
        GenerationParameters p = Parameters();
        byte[] plain = ImageEncoder.Encode(image, ImageFormat.Jpeg, 80);
        byte[] jpeg = ImageEncoder.Encode(image, ImageFormat.Jpeg, 80, p);
        Assert.Equal(ImageEncoder.DecodeRgb(plain).Rgb, ImageEncoder.DecodeRgb(jpeg).Rgb);
        Assert.Equal(new[] { p.ToParametersText() }, JpegComment.Read(jpeg));
        Assert.Equal(jpeg.Length, plain.Length + 4 + Encoding.UTF8.GetByteCount(p.ToParametersText()));
        var (format, texts) = ImageMetadata.Read(jpeg);
        Assert.Equal("jpeg", format);
        Assert.Equal(p.ToParametersText(), ImageMetadata.ParametersText(texts));
    }

    [Fact]
    public void AWebPCarriesTheTextAsExifUserCommentInTheExtendedFormat()
    {
        GeneratedImage image = Gradient(32, 24);
        GenerationParameters p = Parameters("ein Hund, 犬");
        byte[] plain = ImageEncoder.Encode(image, ImageFormat.WebP, 80);
        byte[] webp = ImageEncoder.Encode(image, ImageFormat.WebP, 80, p);
        Assert.Equal(ImageEncoder.DecodeRgb(plain).Rgb, ImageEncoder.DecodeRgb(webp).Rgb);
        Assert.Equal((uint)(webp.Length - 8), BinaryPrimitives.ReadUInt32LittleEndian(webp.AsSpan(4)));
        Assert.Equal("VP8X", Encoding.ASCII.GetString(webp, 12, 4));
        Assert.Equal(0x08, webp[20] & 0x08); // the EXIF flag
        Assert.Equal(31, webp[24] | (webp[25] << 8) | (webp[26] << 16)); // canvas width - 1
        Assert.Equal(23, webp[27] | (webp[28] << 8) | (webp[29] << 16));
        byte[] exif = WebPExif.ReadExif(webp)!;
        Assert.Equal("II*\0"u8.ToArray(), exif[..4]);
        Assert.Equal(p.ToParametersText(), ExifUserComment.Read(exif));
        Assert.Equal(p.ToParametersText(), ImageMetadata.ParametersText(ImageMetadata.Read(webp).Texts));
    }

    [Fact]
    public void TheExifUserCommentIsPiexifsUnicodeEncoding()
    {
        byte[] exif = ExifUserComment.Build("héllo");
        int at = exif.AsSpan().IndexOf("UNICODE\0"u8);
        Assert.True(at > 0);
        Assert.Equal(Encoding.BigEndianUnicode.GetBytes("héllo"), exif[(at + 8)..]);
        Assert.Equal("héllo", ExifUserComment.Read([.. "Exif\0\0"u8, .. exif])); // with JPEG's APP1 prefix too
    }

    private static List<(string Type, byte[] Data, uint Crc)> Chunks(byte[] png)
    {
        var chunks = new List<(string, byte[], uint)>();
        for (int at = 8; at < png.Length;)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(at));
            string type = Encoding.ASCII.GetString(png, at + 4, 4);
            chunks.Add((type, png[(at + 8)..(at + 8 + length)], BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan(at + 8 + length))));
            at += 12 + length;
        }

        return chunks;
    }
}
