using System.Text.Json;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Tokenizers;

namespace VqDiffusion.Model.Tests.Tokenizers;

/// <summary>
/// CLIPTokenizer against ids produced by transformers' slow CLIPTokenizer (ftfy not installed):
/// tests/fixtures/tiny-ithq/golden/tokenizer.json (the tiny model's tokenizer) and
/// tests/fixtures/clip-vocab-tokens.json (the real CLIP BPE with pad "!" and with pad "&lt;|endoftext|&gt;").
/// </summary>
public sealed class CLIPTokenizerTests : IClassFixture<CLIPTokenizerFolders>
{
    private const int MaxLength = 77;

    private readonly CLIPTokenizerFolders _folders;

    public CLIPTokenizerTests(CLIPTokenizerFolders folders)
    {
        _folders = folders;
    }

    public static TheoryData<int, string> TinyCases()
    {
        var data = new TheoryData<int, string>();
        JsonElement cases = TinyGolden.Value.RootElement.GetProperty("cases");
        int index = 0;
        foreach (JsonElement c in cases.EnumerateArray())
        {
            data.Add(index++, Shorten(c.GetProperty("prompt").GetString()!));
        }

        return data;
    }

    public static TheoryData<int, string> ClipVocabCases()
    {
        var data = new TheoryData<int, string>();
        JsonElement cases = ClipVocabGolden.Value.RootElement.GetProperty("cases");
        int index = 0;
        foreach (JsonElement c in cases.EnumerateArray())
        {
            data.Add(index++, Shorten(c.GetProperty("prompt").GetString()!));
        }

        return data;
    }

    [Fact]
    public void TinyTokenizer_properties_come_from_the_folder()
    {
        JsonElement expected = TinyGolden.Value.RootElement.GetProperty("tokenizer");
        CLIPTokenizer tokenizer = _folders.Tiny;

        Assert.Equal(expected.GetProperty("model_max_length").GetInt32(), tokenizer.ModelMaxLength);
        Assert.Equal(expected.GetProperty("vocab_size").GetInt32(), tokenizer.VocabSize);
        Assert.Equal(expected.GetProperty("pad_token").GetString(), tokenizer.PadToken);
        Assert.Equal(expected.GetProperty("pad_token_id").GetInt32(), tokenizer.PadTokenId);
        Assert.Equal(expected.GetProperty("bos_token_id").GetInt32(), tokenizer.BosTokenId);
        Assert.Equal(expected.GetProperty("eos_token_id").GetInt32(), tokenizer.EosTokenId);
        Assert.Equal(813, tokenizer.UnkTokenId);
    }

    [Theory]
    [MemberData(nameof(TinyCases))]
    public void TinyTokenizer_matches_transformers(int caseIndex, string promptPreview)
    {
        JsonElement c = TinyGolden.Value.RootElement.GetProperty("cases")[caseIndex];
        string prompt = c.GetProperty("prompt").GetString()!;
        Assert.StartsWith(promptPreview.TrimEnd('…'), prompt, StringComparison.Ordinal);
        CLIPTokenizer tokenizer = _folders.Tiny;

        Assert.Equal(Strings(c.GetProperty("tokens")), tokenizer.Tokenize(prompt));
        Assert.Equal(c.GetProperty("num_ids_with_bos_eos").GetInt32(), tokenizer.Encode(prompt).Count);
        Assert.Equal(Ints(c.GetProperty("tokenizer_call_ids")), tokenizer.Call(prompt, MaxLength, truncation: false));
        Assert.Equal(Ints(c.GetProperty("pipeline_input_ids")), tokenizer.EncodeForPipeline(prompt));
    }

    [Fact]
    public void TinyTokenizer_uncond_ids_for_the_empty_prompt_with_truncation()
    {
        int[] expected = Ints(TinyGolden.Value.RootElement.GetProperty("uncond_ids_for_empty_prompt_truncation_true"));
        Assert.Equal(expected, _folders.Tiny.Call(string.Empty, MaxLength, truncation: true));
    }

    [Fact]
    public void TinyTokenizer_batch_with_an_overlong_prompt_gives_each_prompt_its_own_ids()
    {
        // diffusers raises for this list (the unpadded row is longer than 77); per prompt the ids are still
        // well defined: the short one is padded to 77, the long one keeps all its ids, and the pipeline cut
        // leaves 77 ids without eos.
        JsonElement root = TinyGolden.Value.RootElement;
        string[] prompts = Strings(root.GetProperty("batch_with_overlong_prompt").GetProperty("prompts"));
        Assert.StartsWith("ValueError", root.GetProperty("batch_with_overlong_prompt").GetProperty("result").GetString(), StringComparison.Ordinal);
        Assert.Equal(2, prompts.Length);
        CLIPTokenizer tokenizer = _folders.Tiny;

        foreach (string prompt in prompts)
        {
            JsonElement golden = root.GetProperty("cases").EnumerateArray()
                .Single(c => c.GetProperty("prompt").GetString() == prompt);
            Assert.Equal(Ints(golden.GetProperty("tokenizer_call_ids")), tokenizer.Call(prompt, MaxLength, truncation: false));
            Assert.Equal(Ints(golden.GetProperty("pipeline_input_ids")), tokenizer.EncodeForPipeline(prompt));
        }

        int[] shortIds = tokenizer.Call(prompts[0], MaxLength, truncation: false);
        int[] longIds = tokenizer.Call(prompts[1], MaxLength, truncation: false);
        Assert.Equal(MaxLength, shortIds.Length);
        Assert.True(longIds.Length > MaxLength, $"the long prompt has {longIds.Length} ids");
        Assert.NotEqual(tokenizer.EosTokenId, tokenizer.EncodeForPipeline(prompts[1])[^1]);
    }

    [Fact]
    public void Truncation_keeps_the_eos_like_transformers()
    {
        CLIPTokenizer tokenizer = _folders.Tiny;
        JsonElement longCase = TinyGolden.Value.RootElement.GetProperty("cases").EnumerateArray().Last();
        string prompt = longCase.GetProperty("prompt").GetString()!;
        int[] all = Ints(longCase.GetProperty("tokenizer_call_ids"));
        Assert.True(all.Length > MaxLength);

        int[] truncated = tokenizer.Call(prompt, MaxLength, truncation: true);

        int[] expected = [.. all[..(MaxLength - 1)], tokenizer.EosTokenId];
        Assert.Equal(expected, truncated);
    }

    [Theory]
    [MemberData(nameof(ClipVocabCases))]
    public void ClipVocab_pad_bang_matches_transformers(int caseIndex, string promptPreview)
    {
        JsonElement c = ClipVocabGolden.Value.RootElement.GetProperty("cases")[caseIndex];
        string prompt = c.GetProperty("prompt").GetString()!;
        Assert.StartsWith(promptPreview.TrimEnd('…'), prompt, StringComparison.Ordinal);
        CLIPTokenizer tokenizer = _folders.ClipPadBang;

        // The case's tokens were recorded with this setting ("!" is an added token, so it stays "!").
        Assert.Equal(Strings(c.GetProperty("tokens")), tokenizer.Tokenize(prompt));
        Assert.Equal(Ints(c.GetProperty("tokenizer_call_ids_ithq_pad_bang")), tokenizer.Call(prompt, MaxLength, truncation: false));
        Assert.Equal(Ints(c.GetProperty("pipeline_input_ids_ithq_pad_bang")), tokenizer.EncodeForPipeline(prompt));
    }

    [Theory]
    [MemberData(nameof(ClipVocabCases))]
    public void ClipVocab_pad_eos_matches_transformers(int caseIndex, string promptPreview)
    {
        JsonElement c = ClipVocabGolden.Value.RootElement.GetProperty("cases")[caseIndex];
        string prompt = c.GetProperty("prompt").GetString()!;
        Assert.StartsWith(promptPreview.TrimEnd('…'), prompt, StringComparison.Ordinal);
        CLIPTokenizer tokenizer = _folders.ClipPadEos;

        Assert.Equal(Ints(c.GetProperty("tokenizer_call_ids_clip_pad_eos")), tokenizer.Call(prompt, MaxLength, truncation: false));
        Assert.Equal(Ints(c.GetProperty("pipeline_input_ids_clip_pad_eos")), tokenizer.EncodeForPipeline(prompt));
    }

    [Fact]
    public void ClipVocab_settings_read_their_special_tokens()
    {
        Assert.Equal("!", _folders.ClipPadBang.PadToken);
        Assert.Equal(0, _folders.ClipPadBang.PadTokenId);
        Assert.Equal("<|endoftext|>", _folders.ClipPadEos.PadToken);
        Assert.Equal(49407, _folders.ClipPadEos.PadTokenId);
        foreach (CLIPTokenizer tokenizer in new[] { _folders.ClipPadBang, _folders.ClipPadEos, _folders.ClipNoConfig })
        {
            Assert.Equal(49406, tokenizer.BosTokenId);
            Assert.Equal(49407, tokenizer.EosTokenId);
            Assert.Equal(49408, tokenizer.VocabSize);
            Assert.Equal(77, tokenizer.ModelMaxLength);
        }

        // Only in the bang setting is "!" special: elsewhere "!!!" is one BPE token, "!!!</w>".
        Assert.Equal(["!", "!", "!"], _folders.ClipPadBang.Tokenize("!!!"));
        Assert.Equal(["!!!</w>"], _folders.ClipPadEos.Tokenize("!!!"));
    }

    [Fact]
    public void Folder_with_only_vocab_and_merges_uses_clip_defaults()
    {
        // No tokenizer_config.json / special_tokens_map.json: pad = <|endoftext|>, model_max_length = 77.
        JsonElement c = ClipVocabGolden.Value.RootElement.GetProperty("cases").EnumerateArray()
            .First(e => e.GetProperty("prompt").GetString() == "Hello, world! How are you?");
        string prompt = c.GetProperty("prompt").GetString()!;
        Assert.Equal(Ints(c.GetProperty("tokenizer_call_ids_clip_pad_eos")), _folders.ClipNoConfig.Call(prompt, 77, truncation: false));
        Assert.Equal("<|endoftext|>", _folders.ClipNoConfig.PadToken);
    }

    [Theory]
    [InlineData("İstanbul", new[] { "i</w>", "Ìĩ</w>", "stanbul</w>" })] // 'İ'.lower() == 'i\u0307' (2 code points)
    [InlineData("ΟΔΟΣ ΣΑΣ", new[] { "Î", "¿", "Î", "´", "Î", "¿", "Ï", "Ĥ</w>", "Ï", "ĥ", "Î", "±", "Ï", "Ĥ</w>" })] // final sigma ς (CF 82) vs σ (CF 83)
    [InlineData("ΑΣ\u0301 x", new[] { "Î", "±", "Ï", "Ĥ</w>", "Ì", "ģ</w>", "x</w>" })] // a case-ignorable mark after Σ: still final
    [InlineData("e\u0301 É", new[] { "Ã©</w>", "Ã©</w>" })] // NFC composes e + U+0301 before lower-casing
    [InlineData("a\u200db\u00a0c\u2028d", new[] { "ab</w>", "c</w>", "d</w>" })] // Cf dropped, Zs / Zl split
    [InlineData("𝐀bc 𝟙2", new[] { "ðĿĲ", "Ģ", "bc</w>", "ðĿ", "Ł", "Ļ</w>", "2</w>" })] // supplementary letters / digits are L / N
    [InlineData("it'ſ <|ENDOFTEXT|>x", new[] { "it</w>", "'", "Å", "¿</w>", "<|endoftext|>", "x</w>" })] // ſ folds to s: "'ſ" is one regex match
    public void Unicode_edge_cases_match_transformers(string prompt, string[] expectedTokens)
    {
        // Expected tokens were produced with Python 3.11 `str.lower`, `unicodedata` and the `regex` module
        // following tokenization_clip.py (real CLIP vocab, pad "!").
        Assert.Equal(expectedTokens, _folders.ClipPadBang.Tokenize(prompt));
    }

    [Fact]
    public void Literal_endoftext_in_any_case_is_the_eos_id()
    {
        CLIPTokenizer tokenizer = _folders.ClipPadBang;
        Assert.Equal([49406, 320, 49407, 2368, 49407], tokenizer.Encode("a <|endoftext|> cat"));
        Assert.Equal([49406, 320, 49407, 2368, 49407], tokenizer.Encode("a <|ENDOFTEXT|> cat"));
        Assert.Equal([49406, 320, 49406, 2368, 49407], tokenizer.Encode("a<|startoftext|>cat"));
    }

    [Fact]
    public void Concurrent_calls_give_the_same_ids_as_sequential_ones()
    {
        CLIPTokenizer tokenizer = CLIPTokenizer.FromFolder(_folders.ClipPadBangDir);
        string[] prompts = ClipVocabGolden.Value.RootElement.GetProperty("cases").EnumerateArray()
            .Select(c => c.GetProperty("prompt").GetString()!)
            .ToArray();
        int[][] expected = ClipVocabGolden.Value.RootElement.GetProperty("cases").EnumerateArray()
            .Select(c => Ints(c.GetProperty("pipeline_input_ids_ithq_pad_bang")))
            .ToArray();

        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, 64 * prompts.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            int k = (i * 7) % prompts.Length;
            if (!tokenizer.EncodeForPipeline(prompts[k]).SequenceEqual(expected[k]))
            {
                failures.Add(prompts[k]);
            }
        });

        Assert.Empty(failures);
    }

    [Fact]
    public void Missing_vocab_json_names_the_file()
    {
        using var dir = new TokenizerTempFolder();
        File.Copy(Path.Combine(Fixtures.TinyModel, "tokenizer", "merges.txt"), Path.Combine(dir.Path, "merges.txt"));
        var ex = Assert.Throws<ModelLoadException>(() => CLIPTokenizer.FromFolder(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "vocab.json"), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_merges_txt_names_the_file()
    {
        using var dir = new TokenizerTempFolder();
        File.Copy(Path.Combine(Fixtures.TinyModel, "tokenizer", "vocab.json"), Path.Combine(dir.Path, "vocab.json"));
        var ex = Assert.Throws<ModelLoadException>(() => CLIPTokenizer.FromFolder(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "merges.txt"), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_folder_names_the_folder()
    {
        string path = Path.Combine(Path.GetTempPath(), "no-such-tokenizer-" + Guid.NewGuid().ToString("N"));
        var ex = Assert.Throws<ModelLoadException>(() => CLIPTokenizer.FromFolder(path));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Invalid_tokenizer_config_names_the_file()
    {
        using var dir = TokenizerTempFolder.WithTinyVocab();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), "{ \"pad_token\": ");
        var ex = Assert.Throws<ModelLoadException>(() => CLIPTokenizer.FromFolder(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "tokenizer_config.json"), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Pad_token_missing_from_the_vocabulary_is_reported()
    {
        using var dir = TokenizerTempFolder.WithTinyVocab();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), "{ \"pad_token\": \"<|pad|>\", \"model_max_length\": 77 }");
        var ex = Assert.Throws<ModelLoadException>(() => CLIPTokenizer.FromFolder(dir.Path));
        Assert.Contains("pad_token '<|pad|>'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("vocab.json", ex.Message, StringComparison.Ordinal);
        Assert.Contains("tokenizer_config.json", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unusable_model_max_length_names_the_config()
    {
        using var dir = TokenizerTempFolder.WithTinyVocab();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), "{ \"model_max_length\": 1000000000000000019884624838656 }");
        var ex = Assert.Throws<ModelLoadException>(() => CLIPTokenizer.FromFolder(dir.Path));
        Assert.Contains(Path.Combine(dir.Path, "tokenizer_config.json"), ex.Message, StringComparison.Ordinal);
        Assert.Contains("model_max_length", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Legacy_special_tokens_map_overrides_the_config_without_added_tokens_decoder()
    {
        using var dir = TokenizerTempFolder.WithTinyVocab();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), "{ \"pad_token\": \"<|endoftext|>\" }");
        File.WriteAllText(
            Path.Combine(dir.Path, "special_tokens_map.json"),
            "{ \"pad_token\": { \"__type\": \"AddedToken\", \"content\": \"!\", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, \"single_word\": false } }");
        CLIPTokenizer tokenizer = CLIPTokenizer.FromFolder(dir.Path);
        Assert.Equal("!", tokenizer.PadToken);
        Assert.Equal(0, tokenizer.PadTokenId);
        Assert.Equal(813, tokenizer.EosTokenId);
        Assert.Equal(77, tokenizer.ModelMaxLength);
    }

    [Fact]
    public void Config_with_added_tokens_decoder_wins_over_special_tokens_map()
    {
        using var dir = TokenizerTempFolder.WithTinyVocab();
        File.WriteAllText(
            Path.Combine(dir.Path, "tokenizer_config.json"),
            "{ \"added_tokens_decoder\": { \"813\": { \"content\": \"<|endoftext|>\", \"special\": true } }, \"pad_token\": \"<|endoftext|>\", \"model_max_length\": 16 }");
        File.WriteAllText(Path.Combine(dir.Path, "special_tokens_map.json"), "{ \"pad_token\": \"!\" }");
        CLIPTokenizer tokenizer = CLIPTokenizer.FromFolder(dir.Path);
        Assert.Equal(813, tokenizer.PadTokenId);
        Assert.Equal(16, tokenizer.ModelMaxLength);
        Assert.Equal(16, tokenizer.EncodeForPipeline("a photo of a cat").Length);
    }

    private static readonly Lazy<JsonDocument> TinyGolden = new(() =>
        JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Fixtures.TinyGolden, "tokenizer.json"))));

    private static readonly Lazy<JsonDocument> ClipVocabGolden = new(() =>
        JsonDocument.Parse(File.ReadAllBytes(Fixtures.ClipVocabTokens)));

    private static string Shorten(string prompt) =>
        prompt.Length <= 40 ? prompt : prompt[..40] + "…";

    private static int[] Ints(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();

    private static string[] Strings(JsonElement array) => array.EnumerateArray().Select(e => e.GetString()!).ToArray();
}
