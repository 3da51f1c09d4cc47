using Microsoft.ML.Tokenizers;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// transformers' slow <c>CLIPTokenizer</c> (<c>tokenization_clip.py</c>, ftfy not installed), as the diffusers
/// <c>VQDiffusionPipeline</c> uses it. Encoding a prompt:
/// <list type="number">
/// <item>cut the text on the added tokens (bos, eos, unk, pad, <c>added_tokens_decoder</c>): they are never
/// split, so with <c>pad_token = "!"</c> every <c>!</c> typed in a prompt is the pad id, and the literal
/// <c>&lt;|endoftext|&gt;</c> is the eos id (<see cref="AddedTokenSplitter"/>);</item>
/// <item>each other piece on its own: BasicTokenizer clean-up and lower-casing (<see cref="CLIPTextNormalizer"/>),
/// the CLIP regex (<see cref="CLIPPreTokenizer"/>), then byte-level BPE with the <c>&lt;/w&gt;</c> end-of-word
/// suffix (Microsoft.ML.Tokenizers <see cref="BpeTokenizer"/>);</item>
/// <item><c>bos + ids + eos</c>, then truncation / padding as <c>tokenizer(text, padding="max_length", ...)</c>.</item>
/// </list>
/// Ids and special tokens all come from the tokenizer folder. Instances are immutable (the BPE cache of
/// Microsoft.ML.Tokenizers is internally locked), so one instance can serve concurrent requests.
/// </summary>
public sealed class CLIPTokenizer
{
    private const string EndOfWordSuffix = "</w>";

    // tokenization_clip.py seeds its BPE cache with these two strings, so when the CLIP regex matches them
    // (e.g. "<|ENDOFTEXT|>" lower-cased by the normaliser) they map to their token without BPE.
    private static readonly string[] BpeCacheLiterals = ["<|startoftext|>", "<|endoftext|>"];

    private readonly BpeTokenizer _bpe;
    private readonly AddedTokenSplitter _splitter;
    private readonly Dictionary<string, int> _addedTokenIds;

    private CLIPTokenizer(
        BpeTokenizer bpe,
        AddedTokenSplitter splitter,
        Dictionary<string, int> addedTokenIds,
        int modelMaxLength,
        int vocabSize,
        string padToken,
        int padTokenId,
        int bosTokenId,
        int eosTokenId,
        int unkTokenId)
    {
        _bpe = bpe;
        _splitter = splitter;
        _addedTokenIds = addedTokenIds;
        ModelMaxLength = modelMaxLength;
        VocabSize = vocabSize;
        PadToken = padToken;
        PadTokenId = padTokenId;
        BosTokenId = bosTokenId;
        EosTokenId = eosTokenId;
        UnkTokenId = unkTokenId;
    }

    /// <summary><c>tokenizer.model_max_length</c> (77 for CLIP).</summary>
    public int ModelMaxLength { get; }

    public int PadTokenId { get; }

    public int BosTokenId { get; }

    public int EosTokenId { get; }

    public int UnkTokenId { get; }

    public string PadToken { get; }

    /// <summary><c>tokenizer.vocab_size</c>: the number of entries of vocab.json.</summary>
    public int VocabSize { get; }

    /// <summary>
    /// Loads a tokenizer folder (<c>vocab.json</c>, <c>merges.txt</c>, optional <c>tokenizer_config.json</c>,
    /// <c>special_tokens_map.json</c>, <c>added_tokens.json</c>). Throws <see cref="ModelLoadException"/> naming
    /// the file when one is missing or invalid, or when a special token (e.g. the pad token) has no id; throws
    /// <see cref="PlatformNotSupportedException"/> when the process cannot do Unicode NFC (globalization-invariant
    /// mode).
    /// </summary>
    public static CLIPTokenizer FromFolder(string tokenizerDir)
    {
        CLIPTextNormalizer.EnsureUnicodeNormalizationAvailable();
        CLIPTokenizerFiles files = CLIPTokenizerFiles.Load(tokenizerDir);

        // Ids of the never-split tokens: explicit ids first (added_tokens_decoder / added_tokens.json), then the
        // special tokens, which take their vocab.json id (transformers' _add_tokens for a token already in the
        // vocabulary).
        var addedIds = new Dictionary<string, int>(StringComparer.Ordinal);
        var addedTokens = new List<AddedTokenSpec>();
        foreach ((int id, AddedTokenSpec token) in files.AddedTokensWithIds)
        {
            addedIds[token.Content] = id;
            addedTokens.Add(token);
        }

        int SpecialId(AddedTokenSpec token, string role, string source)
        {
            if (addedIds.TryGetValue(token.Content, out int id) || files.Vocab.TryGetValue(token.Content, out id))
            {
                addedIds.TryAdd(token.Content, id);
                addedTokens.Add(token);
                return id;
            }

            throw new ModelLoadException(
                $"{files.VocabPath}: the {role} '{token.Content}' (from {source}) is not in vocab.json and has no id in "
                + $"added_tokens_decoder; the text encoder has no embedding for it. Fix {CLIPTokenizerFiles.ConfigFileName} / "
                + $"{CLIPTokenizerFiles.SpecialTokensMapFileName} or the vocabulary.");
        }

        int bosId = SpecialId(files.BosToken, "bos_token", "the tokenizer files");
        int eosId = SpecialId(files.EosToken, "eos_token", "the tokenizer files");
        int unkId = SpecialId(files.UnkToken, "unk_token", "the tokenizer files");
        int padId = SpecialId(files.PadToken, "pad_token", files.PadTokenSource);
        foreach (AddedTokenSpec token in files.AdditionalSpecialTokens)
        {
            SpecialId(token, "additional special token", "additional_special_tokens");
        }

        var cacheLiterals = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string literal in BpeCacheLiterals)
        {
            if (addedIds.TryGetValue(literal, out int id) || files.Vocab.TryGetValue(literal, out id))
            {
                cacheLiterals[literal] = id;
            }
            else
            {
                cacheLiterals[literal] = unkId;
            }
        }

        string? unknownToken = files.Vocab.ContainsKey(files.UnkToken.Content) ? files.UnkToken.Content : null;
        var options = new BpeOptions(files.Vocab)
        {
            Merges = files.Merges,
            SpecialTokens = cacheLiterals,
            Normalizer = CLIPTextNormalizer.Instance,
            PreTokenizer = CLIPPreTokenizer.Instance,
            UnknownToken = unknownToken,
            EndOfWordSuffix = EndOfWordSuffix,
            ByteLevel = true,
        };

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(options);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            throw new ModelLoadException(
                $"{files.MergesPath}: the BPE model cannot be built from it and {files.VocabPath}: {ex.Message}", ex);
        }

        return new CLIPTokenizer(
            bpe,
            new AddedTokenSplitter(addedTokens),
            addedIds,
            files.ModelMaxLength,
            files.Vocab.Count,
            files.PadToken.Content,
            padId,
            bosId,
            eosId,
            unkId);
    }

    /// <summary>The BPE token strings, without bos/eos: <c>tokenizer.tokenize(text)</c>.</summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        var tokens = new List<string>();
        Run(text, tokens, null);
        return tokens;
    }

    /// <summary>The ids with bos and eos, neither truncated nor padded.</summary>
    public IReadOnlyList<int> Encode(string text)
    {
        var ids = new List<int> { BosTokenId };
        Run(text, null, ids);
        ids.Add(EosTokenId);
        return ids;
    }

    /// <summary>
    /// <c>tokenizer(text, padding="max_length", max_length=maxLength, truncation=truncation).input_ids</c>:
    /// bos + ids + eos; with truncation the text ids are cut so that the result has <paramref name="maxLength"/>
    /// ids and still ends with eos; then padded with <see cref="PadTokenId"/> up to <paramref name="maxLength"/>.
    /// Without truncation an over-long text gives more than <paramref name="maxLength"/> ids.
    /// </summary>
    public int[] Call(string text, int maxLength, bool truncation)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        var ids = new List<int>();
        Run(text, null, ids);

        if (truncation)
        {
            // transformers truncate_sequences (longest_first, one sequence, truncation_side right): it only cuts
            // when the text ids are longer than the number of ids to remove, and otherwise leaves them whole.
            int toRemove = ids.Count + 2 - maxLength;
            if (toRemove > 0 && ids.Count > toRemove)
            {
                ids.RemoveRange(ids.Count - toRemove, toRemove);
            }
        }

        int length = Math.Max(ids.Count + 2, maxLength);
        var result = new int[length];
        result[0] = BosTokenId;
        ids.CopyTo(result, 1);
        result[ids.Count + 1] = EosTokenId;
        Array.Fill(result, PadTokenId, ids.Count + 2, length - ids.Count - 2);
        return result;
    }

    /// <summary>
    /// The ids <c>VQDiffusionPipeline._encode_prompt</c> feeds the text encoder: <see cref="Call"/> with
    /// <see cref="ModelMaxLength"/> and no truncation, then the first <see cref="ModelMaxLength"/> ids (an
    /// over-long prompt loses its eos, as in diffusers).
    /// </summary>
    public int[] EncodeForPipeline(string text)
    {
        int[] ids = Call(text, ModelMaxLength, truncation: false);
        return ids.Length > ModelMaxLength ? ids[..ModelMaxLength] : ids;
    }

    private void Run(string text, List<string>? tokens, List<int>? ids)
    {
        ArgumentNullException.ThrowIfNull(text);
        foreach (string piece in _splitter.Split(text))
        {
            if (_splitter.IsAddedToken(piece))
            {
                tokens?.Add(piece);
                ids?.Add(_addedTokenIds[piece]);
                continue;
            }

            foreach (EncodedToken token in _bpe.EncodeToTokens(piece, out _))
            {
                tokens?.Add(token.Value);

                // convert_tokens_to_ids looks a token up among the added tokens first.
                ids?.Add(_addedTokenIds.TryGetValue(token.Value, out int addedId) ? addedId : token.Id);
            }
        }
    }
}
