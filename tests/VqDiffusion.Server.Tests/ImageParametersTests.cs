using VqDiffusion.Grpc.V1;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Server.Tests.TestSupport;

namespace VqDiffusion.Server.Tests;

/// <summary>Every image the server encodes carries the parameters of its request.</summary>
public sealed class ImageParametersTests : IClassFixture<SharedServerFixture>
{
    private readonly RunningServer _server;

    public ImageParametersTests(SharedServerFixture fixture) => _server = fixture.Server;

    [Fact]
    public async Task APngCarriesTheRequestsParametersAsTextAndJson()
    {
        var request = new GenerateRequest
        {
            Prompts = { "a painting of a dog", "a red car, at night" },
            NumInferenceSteps = 4,
            GuidanceScale = 3f,
            TruncationRate = 0.9f,
            NumImagesPerPrompt = 2,
            Seed = 123,
        };
        var events = await StreamCollector.ReadAllAsync(_server.Client.Generate(request));
        var images = events.Where(e => e.Image is not null).Select(e => e.Image).ToList();
        Assert.Equal(4, images.Count);
        foreach (var image in images)
        {
            var (format, texts) = ImageMetadata.Read(image.Data.ToByteArray());
            Assert.Equal("png", format);
            var (prompt, _, settings) = GenerationParameters.ParseText(texts[GenerationParameters.ParametersKey]);
            Assert.Equal(request.Prompts[image.PromptIndex], prompt);
            Assert.Equal("4", settings["Steps"]);
            Assert.Equal("diffusers", settings["Sampler"]);
            Assert.Equal("3", settings["CFG scale"]);
            Assert.Equal("123", settings["Seed"]);
            Assert.Equal("32x32", settings["Size"]);
            Assert.Equal("tiny-ithq", settings["Model"]);
            Assert.Equal("0.9", settings["Truncation rate"]);
            Assert.Equal(("4", image.Index.ToString(System.Globalization.CultureInfo.InvariantCulture)), (settings["Batch size"], settings["Batch pos"]));
            Assert.StartsWith("VqDiffusion.Grpc ", settings["Version"]);

            GenerationParameters json = GenerationParameters.FromJson(texts[GenerationParameters.JsonKey])!;
            Assert.Equal(request.Prompts, json.Prompts);
            Assert.Equal((2, image.Index, 123UL, 4, 3f, 0.9f), (json.ImagesPerPrompt, json.ImageIndex, json.Seed, json.Steps, json.GuidanceScale, json.TruncationRate));
        }
    }

    [Fact]
    public async Task DefaultsAndARandomSeedAreWrittenAsResolvedAndJpegAndWebPCarryTheText()
    {
        var request = new GenerateRequest
        {
            Prompts = { "a cat" },
            ImageFormat = Grpc.V1.ImageFormat.Jpeg,
            Sampler = new SamplerOptions { Kind = SamplerKind.VqDiffusion, Speed = 10, ClassifierFreeEmbeddings = ClassifierFreeEmbeddings.EmptyPrompt },
        };
        var events = await StreamCollector.ReadAllAsync(_server.Client.Generate(request));
        ulong seed = events.Single(e => e.Started is not null).Started.Seed;
        byte[] jpeg = events.Single(e => e.Image is not null).Image.Data.ToByteArray();
        var (prompt, negative, settings) = GenerationParameters.ParseText(ImageMetadata.ParametersText(ImageMetadata.Read(jpeg).Texts)!);
        Assert.Equal("a cat", prompt);
        Assert.Equal(string.Empty, negative); // guidance against the empty prompt
        Assert.Equal(seed.ToString(System.Globalization.CultureInfo.InvariantCulture), settings["Seed"]);
        Assert.Equal("5", settings["CFG scale"]); // the default, resolved
        Assert.Equal(("100", "vq-diffusion", "10", "empty-prompt"), (settings["Steps"], settings["Sampler"], settings["Speed"], settings["Negative embeddings"]));

        request.ImageFormat = Grpc.V1.ImageFormat.Webp;
        request.Seed = seed;
        events = await StreamCollector.ReadAllAsync(_server.Client.Generate(request));
        byte[] webp = events.Single(e => e.Image is not null).Image.Data.ToByteArray();
        var webpSettings = GenerationParameters.ParseText(ImageMetadata.ParametersText(ImageMetadata.Read(webp).Texts)!).Settings;
        Assert.Equal(settings, webpSettings);
    }
}
