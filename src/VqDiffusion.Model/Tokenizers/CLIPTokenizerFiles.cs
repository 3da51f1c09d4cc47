using System.Text.Json;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// Everything <c>CLIPTokenizer.from_pretrained(folder)</c> reads from a tokenizer folder: <c>vocab.json</c>,
/// <c>merges.txt</c>, and the optional <c>tokenizer_config.json</c>, <c>special_tokens_map.json</c> and
/// <c>added_tokens.json</c>. Special tokens may be plain strings or AddedToken objects
/// (<c>{"content": ...}</c>, with or without the old <c>"__type": "AddedToken"</c>). As in transformers: when
/// <c>tokenizer_config.json</c> has <c>added_tokens_decoder</c> (transformers ≥ 4.34) it is authoritative and
/// its AddedToken entries give the flags of the special tokens; otherwise (older files)
/// <c>special_tokens_map.json</c> overrides the config's special tokens and <c>added_tokens.json</c> lists
/// extra tokens. Missing values take <c>CLIPTokenizer</c>'s defaults (bos <c>&lt;|startoftext|&gt;</c>, eos, unk
/// and pad <c>&lt;|endoftext|&gt;</c>, model_max_length 77).
/// </summary>
internal sealed class CLIPTokenizerFiles
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    public const string ConfigFileName = "tokenizer_config.json";
    public const string SpecialTokensMapFileName = "special_tokens_map.json";
    public const string AddedTokensFileName = "added_tokens.json";

    /// <summary>CLIP's default context length (openai/clip-vit-*: 77 positions).</summary>
    public const int DefaultModelMaxLength = 77;

    // tokenization_clip.py reads merges[1 : 49152 - 256 - 2 + 1]: the header line is skipped and at most
    // 48,894 merges are used.
    private const int MaxMerges = 49152 - 256 - 2;

    private static readonly JsonDocumentOptions JsonOptions = new()
    {
        AllowTrailingCommas = true,
        CommentHandling = JsonCommentHandling.Skip,
    };

    private CLIPTokenizerFiles(string directory)
    {
        Directory = directory;
    }

    public string Directory { get; }

    public Dictionary<string, int> Vocab { get; private set; } = new(StringComparer.Ordinal);

    /// <summary>Merges as <c>"a b"</c> strings in rank order (duplicates keep their last rank, as a Python dict does).</summary>
    public List<string> Merges { get; private set; } = [];

    public int ModelMaxLength { get; private set; } = DefaultModelMaxLength;

    public AddedTokenSpec BosToken { get; private set; } = new("<|startoftext|>");

    public AddedTokenSpec EosToken { get; private set; } = new("<|endoftext|>");

    public AddedTokenSpec UnkToken { get; private set; } = new("<|endoftext|>");

    public AddedTokenSpec PadToken { get; private set; } = new("<|endoftext|>");

    /// <summary>Which file the pad token was taken from (for error messages).</summary>
    public string PadTokenSource { get; private set; } = "CLIPTokenizer default";

    public List<AddedTokenSpec> AdditionalSpecialTokens { get; } = [];

    /// <summary>Added tokens with an explicit id (<c>added_tokens_decoder</c>, or legacy <c>added_tokens.json</c>).</summary>
    public List<(int Id, AddedTokenSpec Token)> AddedTokensWithIds { get; } = [];

    public string VocabPath => Path.Combine(Directory, VocabFileName);

    public string MergesPath => Path.Combine(Directory, MergesFileName);

    public string ConfigPath => Path.Combine(Directory, ConfigFileName);

    public string SpecialTokensMapPath => Path.Combine(Directory, SpecialTokensMapFileName);

    public static CLIPTokenizerFiles Load(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (!System.IO.Directory.Exists(directory))
        {
            throw new ModelLoadException($"{directory}: tokenizer folder does not exist.");
        }

        var files = new CLIPTokenizerFiles(directory);
        files.Vocab = ReadVocab(files.VocabPath);
        files.Merges = ReadMerges(files.MergesPath);
        files.ReadSpecialTokens();
        return files;
    }

    private static Dictionary<string, int> ReadVocab(string path)
    {
        using JsonDocument document = ParseJson(path, required: true)!;
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw new ModelLoadException($"{path}: expected a JSON object mapping token strings to ids.");
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty property in document.RootElement.EnumerateObject())
        {
            if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out int id) || id < 0)
            {
                throw new ModelLoadException($"{path}: the id of token '{property.Name}' is not a non-negative integer.");
            }

            vocab[property.Name] = id;
        }

        if (vocab.Count == 0)
        {
            throw new ModelLoadException($"{path}: the vocabulary is empty.");
        }

        return vocab;
    }

    private static List<string> ReadMerges(string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"{path}: merges file does not exist.");
        }

        string text;
        try
        {
            text = File.ReadAllText(path, System.Text.Encoding.UTF8);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{path}: cannot read the merges file: {ex.Message}", ex);
        }

        // merges_handle.read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]; tuple(merge.split()).
        // A line that does not split into exactly two symbols can never match a pair, so it is left out
        // (ranks only matter relative to each other).
        string[] lines = text.Trim().Split('\n');
        var lastRank = new Dictionary<(string, string), int>();
        var ordered = new List<(string A, string B)>();
        for (int i = 1; i < lines.Length && i <= MaxMerges; i++)
        {
            string[] parts = lines[i].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2)
            {
                continue;
            }

            lastRank[(parts[0], parts[1])] = ordered.Count;
            ordered.Add((parts[0], parts[1]));
        }

        var merges = new List<string>(lastRank.Count);
        for (int rank = 0; rank < ordered.Count; rank++)
        {
            if (lastRank[ordered[rank]] == rank)
            {
                merges.Add(ordered[rank].A + " " + ordered[rank].B);
            }
        }

        return merges;
    }

    private void ReadSpecialTokens()
    {
        using JsonDocument? config = ParseJson(ConfigPath, required: false);
        using JsonDocument? specialMap = ParseJson(SpecialTokensMapPath, required: false);

        JsonElement? configRoot = config is null ? null : RequireObject(config.RootElement, ConfigPath);
        JsonElement? mapRoot = specialMap is null ? null : RequireObject(specialMap.RootElement, SpecialTokensMapPath);

        var decoderByContent = new Dictionary<string, AddedTokenSpec>(StringComparer.Ordinal);
        bool hasDecoder = false;
        if (configRoot is { } cfg && cfg.TryGetProperty("added_tokens_decoder", out JsonElement decoder)
            && decoder.ValueKind == JsonValueKind.Object)
        {
            hasDecoder = true;
            foreach (JsonProperty entry in decoder.EnumerateObject())
            {
                if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id))
                {
                    throw new ModelLoadException($"{ConfigPath}: added_tokens_decoder key '{entry.Name}' is not a token id.");
                }

                AddedTokenSpec token = ParseToken(entry.Value, ConfigPath, $"added_tokens_decoder.{entry.Name}")
                    ?? throw new ModelLoadException($"{ConfigPath}: added_tokens_decoder.{entry.Name} is null.");
                AddedTokensWithIds.Add((id, token));
                decoderByContent[token.Content] = token;
            }
        }

        if (configRoot is { } root && root.TryGetProperty("model_max_length", out JsonElement maxLength)
            && maxLength.ValueKind != JsonValueKind.Null)
        {
            if (maxLength.ValueKind != JsonValueKind.Number || !maxLength.TryGetDouble(out double value)
                || value < 1 || value > int.MaxValue || value != Math.Floor(value))
            {
                throw new ModelLoadException(
                    $"{ConfigPath}: model_max_length {maxLength.GetRawText()} is not a usable sequence length (transformers "
                    + $"writes 1e30 when it is unknown; CLIP text encoders take {DefaultModelMaxLength} tokens).");
            }

            ModelMaxLength = (int)value;
        }

        // Legacy files: special_tokens_map.json overrides tokenizer_config.json.
        JsonElement? Lookup(string key, out string source)
        {
            if (!hasDecoder && mapRoot is { } map && map.TryGetProperty(key, out JsonElement fromMap))
            {
                source = SpecialTokensMapPath;
                return fromMap;
            }

            if (configRoot is { } conf && conf.TryGetProperty(key, out JsonElement fromConfig))
            {
                source = ConfigPath;
                return fromConfig;
            }

            source = "CLIPTokenizer default";
            return null;
        }

        AddedTokenSpec Resolve(string key, AddedTokenSpec fallback, out string source)
        {
            JsonElement? element = Lookup(key, out source);
            if (element is null)
            {
                return fallback;
            }

            AddedTokenSpec token = ParseToken(element.Value, source, key)
                ?? throw new ModelLoadException($"{source}: {key} is null; the CLIP tokenizer needs a {key}.");
            return decoderByContent.GetValueOrDefault(token.Content, token);
        }

        BosToken = Resolve("bos_token", BosToken, out _);
        EosToken = Resolve("eos_token", EosToken, out _);
        UnkToken = Resolve("unk_token", UnkToken, out _);
        PadToken = Resolve("pad_token", PadToken, out string padSource);
        PadTokenSource = padSource;

        JsonElement? additional = Lookup("additional_special_tokens", out string additionalSource);
        if (additional is { ValueKind: JsonValueKind.Array } list)
        {
            int index = 0;
            foreach (JsonElement item in list.EnumerateArray())
            {
                AddedTokenSpec? token = ParseToken(item, additionalSource, $"additional_special_tokens[{index++}]");
                if (token is not null)
                {
                    AdditionalSpecialTokens.Add(decoderByContent.GetValueOrDefault(token.Content, token));
                }
            }
        }

        if (!hasDecoder)
        {
            ReadLegacyAddedTokens();
        }
    }

    private void ReadLegacyAddedTokens()
    {
        string path = Path.Combine(Directory, AddedTokensFileName);
        using JsonDocument? document = ParseJson(path, required: false);
        if (document is null)
        {
            return;
        }

        JsonElement root = RequireObject(document.RootElement, path);
        foreach (JsonProperty property in root.EnumerateObject())
        {
            if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out int id) || id < 0)
            {
                throw new ModelLoadException($"{path}: the id of added token '{property.Name}' is not a non-negative integer.");
            }

            AddedTokensWithIds.Add((id, new AddedTokenSpec(property.Name)));
        }
    }

    private static AddedTokenSpec? ParseToken(JsonElement element, string path, string key)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Null:
                return null;
            case JsonValueKind.String:
                return new AddedTokenSpec(element.GetString()!);
            case JsonValueKind.Object:
                if (!element.TryGetProperty("content", out JsonElement content) || content.ValueKind != JsonValueKind.String)
                {
                    throw new ModelLoadException($"{path}: {key} is an AddedToken object without a string 'content'.");
                }

                return new AddedTokenSpec(
                    content.GetString()!,
                    LStrip: ReadFlag(element, "lstrip", path, key),
                    RStrip: ReadFlag(element, "rstrip", path, key),
                    SingleWord: ReadFlag(element, "single_word", path, key));
            default:
                throw new ModelLoadException($"{path}: {key} must be a string or an AddedToken object, not {element.ValueKind}.");
        }
    }

    private static bool ReadFlag(JsonElement token, string name, string path, string key)
    {
        if (!token.TryGetProperty(name, out JsonElement value) || value.ValueKind == JsonValueKind.Null)
        {
            return false;
        }

        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelLoadException($"{path}: {key}.{name} must be true or false."),
        };
    }

    private static JsonElement RequireObject(JsonElement element, string path) =>
        element.ValueKind == JsonValueKind.Object
            ? element
            : throw new ModelLoadException($"{path}: expected a JSON object.");

    private static JsonDocument? ParseJson(string path, bool required)
    {
        if (!File.Exists(path))
        {
            if (required)
            {
                throw new ModelLoadException($"{path}: file does not exist.");
            }

            return null;
        }

        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), JsonOptions);
        }
        catch (JsonException ex)
        {
            throw new ModelLoadException($"{path}: invalid JSON: {ex.Message}", ex);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{path}: cannot read the file: {ex.Message}", ex);
        }
    }
}
