using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Imaging;

/// <summary>
/// How one image was generated, as written into the image file: the common <c>parameters</c> text of image-generation
/// tools (AUTOMATIC1111's web UI and the readers that follow it: the prompt, then <c>Steps: …, Sampler: …, CFG scale: …,
/// Seed: …, Size: WxH, Model: …, …</c>) and a machine-readable JSON form (<c>vqd-parameters</c>) with every setting
/// needed to reproduce the image, the whole batch's prompts included (the images of a request share one generator).
/// </summary>
public sealed partial record GenerationParameters
{
    /// <summary>The text chunk / comment key of the human-readable form.</summary>
    public const string ParametersKey = "parameters";

    /// <summary>The text chunk key of the JSON form.</summary>
    public const string JsonKey = "vqd-parameters";

    [JsonPropertyName("prompt")]
    public required string Prompt { get; init; }

    /// <summary>Every prompt of the request, in order (the image is <see cref="ImageIndex"/> of their batch).</summary>
    [JsonPropertyName("prompts")]
    public required IReadOnlyList<string> Prompts { get; init; }

    [JsonPropertyName("images_per_prompt")]
    public int ImagesPerPrompt { get; init; } = 1;

    /// <summary>The image's index in the request's batch (prompt-major).</summary>
    [JsonPropertyName("image_index")]
    public int ImageIndex { get; init; }

    [JsonPropertyName("seed")]
    public ulong Seed { get; init; }

    [JsonPropertyName("steps")]
    public int Steps { get; init; }

    [JsonPropertyName("guidance_scale")]
    public float GuidanceScale { get; init; }

    [JsonPropertyName("truncation_rate")]
    public float TruncationRate { get; init; }

    [JsonPropertyName("sampler")]
    public string Sampler { get; init; } = "diffusers";

    [JsonPropertyName("speed")]
    public double Speed { get; init; } = SamplerOptions.DefaultSpeed;

    [JsonPropertyName("prior")]
    public string Prior { get; init; } = "none";

    [JsonPropertyName("prior_weight")]
    public double PriorWeight { get; init; }

    [JsonPropertyName("unmask_schedule")]
    public IReadOnlyList<int>? UnmaskSchedule { get; init; }

    /// <summary>The negative side of guidance: <c>model</c> (the model's own), <c>learned</c> or <c>empty-prompt</c>.</summary>
    [JsonPropertyName("negative_embeddings")]
    public string NegativeEmbeddings { get; init; } = "model";

    /// <summary>True when the request gave its own start tokens.</summary>
    [JsonPropertyName("initial_latents")]
    public bool InitialLatents { get; init; }

    /// <summary>Edit: the source (<c>tokens</c> or <c>image</c>), null for text-to-image.</summary>
    [JsonPropertyName("edit_source")]
    public string? EditSource { get; init; }

    [JsonPropertyName("edit_strength")]
    public double? EditStrength { get; init; }

    /// <summary>Edit: the mask (<c>tokens</c> or <c>image</c>), null without one.</summary>
    [JsonPropertyName("edit_mask")]
    public string? EditMask { get; init; }

    [JsonPropertyName("width")]
    public int Width { get; init; }

    [JsonPropertyName("height")]
    public int Height { get; init; }

    [JsonPropertyName("model")]
    public required string Model { get; init; }

    [JsonPropertyName("model_revision")]
    public string? ModelRevision { get; init; }

    [JsonPropertyName("model_commit")]
    public string? ModelCommit { get; init; }

    [JsonPropertyName("version")]
    public string Version { get; init; } = ModelProvenance.Software;

    [JsonIgnore]
    public int BatchSize => Prompts.Count * ImagesPerPrompt;

    /// <summary>The parameters of one image of a request whose defaults are resolved (<see cref="VQDiffusionPipeline.WithDefaults"/>).</summary>
    public static GenerationParameters For(GenerationRequest resolved, ulong seed, GeneratedImage image, ModelProvenance model)
    {
        ArgumentNullException.ThrowIfNull(resolved);
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(model);
        SamplerOptions sampler = resolved.SamplerOrDefault;
        EditOptions? edit = resolved.Edit;
        return new GenerationParameters
        {
            Prompt = resolved.Prompts[image.PromptIndex],
            Prompts = resolved.Prompts,
            ImagesPerPrompt = resolved.NumImagesPerPrompt,
            ImageIndex = image.Index,
            Seed = seed,
            Steps = resolved.NumInferenceSteps ?? GenerationRequest.DefaultNumInferenceSteps,
            GuidanceScale = resolved.GuidanceScale ?? GenerationRequest.DefaultGuidanceScale,
            TruncationRate = resolved.TruncationRate,
            Sampler = SamplerNames.Name(sampler.Kind),
            Speed = sampler.Speed,
            Prior = SamplerNames.Name(sampler.Prior),
            PriorWeight = sampler.PriorWeight,
            UnmaskSchedule = sampler.UnmaskSchedule,
            NegativeEmbeddings = SamplerNames.Name(sampler.ClassifierFreeEmbeddings),
            InitialLatents = resolved.InitialLatents is not null,
            EditSource = edit is null ? null : edit.SourceImage is not null ? "image" : edit.SourceTokens is not null ? "tokens" : null,
            EditStrength = edit?.Strength,
            EditMask = edit is null ? null : edit.MaskImage is not null ? "image" : edit.Mask is not null ? "tokens" : null,
            Width = image.Width,
            Height = image.Height,
            Model = model.Model,
            ModelRevision = model.Revision,
            ModelCommit = model.CommitHash,
        };
    }

    /// <summary>
    /// The <c>parameters</c> text: the prompt, a line <c>Negative prompt: …</c> when guidance used the encoded empty
    /// prompt, then <c>key: value</c> pairs separated by <c>", "</c> (a value with a comma, colon or newline is quoted
    /// as a JSON string, as the web UI does).
    /// </summary>
    public string ToParametersText()
    {
        var pairs = new List<(string Key, string Value)>
        {
            ("Steps", Invariant(Steps)),
            ("Sampler", Sampler),
            ("CFG scale", Invariant(GuidanceScale)),
            ("Seed", Invariant(Seed)),
            ("Size", Invariant($"{Width}x{Height}")),
            ("Model", Model),
        };
        if (ModelRevision is not null)
        {
            pairs.Add(("Model revision", ModelRevision));
        }

        if (ModelCommit is not null)
        {
            pairs.Add(("Model commit", ModelCommit));
        }

        pairs.Add(("Truncation rate", Invariant(TruncationRate)));
        if (BatchSize > 1)
        {
            pairs.Add(("Batch size", Invariant(BatchSize)));
            pairs.Add(("Batch pos", Invariant(ImageIndex)));
        }

        if (Sampler != "diffusers")
        {
            pairs.Add(("Speed", Invariant(Speed)));
            pairs.Add(("Prior", Prior));
            if (PriorWeight != 0)
            {
                pairs.Add(("Prior weight", Invariant(PriorWeight)));
            }
        }

        if (UnmaskSchedule is not null)
        {
            pairs.Add(("Unmask schedule", "[" + string.Join(",", UnmaskSchedule.Select(v => Invariant(v))) + "]"));
        }

        if (NegativeEmbeddings != "model")
        {
            pairs.Add(("Negative embeddings", NegativeEmbeddings));
        }

        if (InitialLatents)
        {
            pairs.Add(("Initial latents", "given"));
        }

        if (EditSource is not null)
        {
            pairs.Add(("Edit source", EditSource));
        }

        if (EditStrength is { } strength)
        {
            pairs.Add(("Denoising strength", Invariant(strength)));
        }

        if (EditMask is not null)
        {
            pairs.Add(("Mask", EditMask));
        }

        pairs.Add(("Version", Version));
        var text = new StringBuilder(Prompt);
        if (NegativeEmbeddings == "empty-prompt")
        {
            text.Append("\nNegative prompt: ");
        }

        text.Append('\n').AppendJoin(", ", pairs.Select(p => $"{p.Key}: {Quote(p.Value)}"));
        return text.ToString();
    }

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads the JSON form; null when it is not one.</summary>
    public static GenerationParameters? FromJson(string json)
    {
        try
        {
            return JsonSerializer.Deserialize<GenerationParameters>(json, JsonOptions);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// Splits a <c>parameters</c> text into its prompt, negative prompt and settings, as the web UI's
    /// <c>parse_generation_parameters</c> does: the last line holds the <c>key: value</c> pairs when it has at least three.
    /// </summary>
    public static (string Prompt, string? NegativePrompt, IReadOnlyDictionary<string, string> Settings) ParseText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        List<string> lines = [.. text.Trim().ReplaceLineEndings("\n").Split('\n')];
        var settings = new Dictionary<string, string>(StringComparer.Ordinal);
        MatchCollection pairs = ParamRegex().Matches(lines[^1]);
        if (pairs.Count >= 3)
        {
            lines.RemoveAt(lines.Count - 1);
            foreach (Match m in pairs)
            {
                string value = m.Groups[2].Value;
                if (value.Length > 1 && value[0] == '"' && value[^1] == '"')
                {
                    try
                    {
                        value = JsonSerializer.Deserialize<string>(value) ?? value;
                    }
                    catch (JsonException)
                    {
                    }
                }

                settings[m.Groups[1].Value.Trim()] = value.Trim();
            }
        }

        var prompt = new List<string>();
        string? negative = null;
        foreach (string line in lines)
        {
            if (line.StartsWith("Negative prompt:", StringComparison.Ordinal))
            {
                negative = line["Negative prompt:".Length..].Trim();
            }
            else if (negative is not null)
            {
                negative += "\n" + line;
            }
            else
            {
                prompt.Add(line);
            }
        }

        return (string.Join("\n", prompt), negative, settings);
    }

    /// <summary>The web UI's <c>re_param</c>.</summary>
    [GeneratedRegex("""\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)""")]
    private static partial Regex ParamRegex();

    /// <summary>The web UI's <c>quote</c>: a JSON string when the value has a comma, colon or newline.</summary>
    private static string Quote(string value) =>
        value.Contains(',', StringComparison.Ordinal) || value.Contains(':', StringComparison.Ordinal) || value.Contains('\n', StringComparison.Ordinal)
            ? JsonSerializer.Serialize(value, JsonOptions)
            : value;

    private static string Invariant<T>(T value)
        where T : IFormattable => value.ToString(null, CultureInfo.InvariantCulture);

    private static string Invariant(FormattableString value) => FormattableString.Invariant(value);

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
