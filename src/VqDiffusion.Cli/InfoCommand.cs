using System.Text.Json;
using VqDiffusion.Model.Imaging;

namespace VqDiffusion.Cli;

/// <summary><c>vqd info [--json] FILE</c>: prints the generation parameters an image carries.</summary>
public static class InfoCommand
{
    public const string Usage =
        "usage: vqd info [--json] FILE\n" +
        "Prints the generation parameters stored in an image written by vqd or the server: the 'parameters' text\n" +
        "(PNG text chunk, JPEG comment, WebP EXIF UserComment) and, for PNG, the JSON 'vqd-parameters' chunk.\n" +
        "--json prints only the JSON (for JPEG/WebP: the prompt and settings parsed from the text).";

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Any(a => a is "-h" or "--help"))
        {
            stdout.WriteLine(Usage);
            return 0;
        }

        bool json = args.Contains("--json");
        string[] files = args.Where(a => a != "--json").ToArray();
        if (files.Length != 1 || files[0].StartsWith("--", StringComparison.Ordinal))
        {
            stderr.WriteLine(files.Length == 0 ? "vqd: error: info needs a FILE (vqd info [--json] FILE)." : $"vqd: error: info takes one FILE, got '{string.Join(' ', files)}'.");
            return 2;
        }

        byte[] data;
        try
        {
            data = File.ReadAllBytes(files[0]);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"vqd: error: {files[0]}: {ex.Message}");
            return 1;
        }

        var (format, texts) = ImageMetadata.Read(data);
        if (format is null)
        {
            stderr.WriteLine($"vqd: error: {files[0]}: not a PNG, JPEG or WebP file.");
            return 2;
        }

        string? parameters = ImageMetadata.ParametersText(texts);
        if (parameters is null)
        {
            stderr.WriteLine($"vqd: error: {files[0]}: no generation parameters in this {format.ToUpperInvariant()} file.");
            return 1;
        }

        if (json)
        {
            if (texts.TryGetValue(GenerationParameters.JsonKey, out string? full) && GenerationParameters.FromJson(full) is not null)
            {
                using var doc = JsonDocument.Parse(full);
                stdout.WriteLine(JsonSerializer.Serialize(doc.RootElement, Indented));
            }
            else
            {
                var (prompt, negative, settings) = GenerationParameters.ParseText(parameters);
                stdout.WriteLine(JsonSerializer.Serialize(new { prompt, negative_prompt = negative, settings }, Indented));
            }

            return 0;
        }

        stdout.WriteLine($"{files[0]}: {format.ToUpperInvariant()}");
        stdout.WriteLine($"{GenerationParameters.ParametersKey}:");
        stdout.WriteLine(parameters);
        foreach (var (key, value) in texts.Where(t => t.Value != parameters).OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            stdout.WriteLine($"{key}:");
            stdout.WriteLine(key == GenerationParameters.JsonKey ? Pretty(value) : value);
        }

        return 0;
    }

    private static string Pretty(string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            return JsonSerializer.Serialize(doc.RootElement, Indented);
        }
        catch (JsonException)
        {
            return json;
        }
    }

    private static readonly JsonSerializerOptions Indented = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
