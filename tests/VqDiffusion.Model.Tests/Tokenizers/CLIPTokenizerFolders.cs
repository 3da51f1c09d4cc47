using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Tokenizers;

namespace VqDiffusion.Model.Tests.Tokenizers;

/// <summary>Tokenizer folders shared by the tests of <see cref="CLIPTokenizerTests"/> (built once, deleted afterwards).</summary>
public sealed class CLIPTokenizerFolders : IDisposable
{
    private readonly TokenizerTempFolder _root = new();

    public CLIPTokenizerFolders()
    {
        Tiny = CLIPTokenizer.FromFolder(Path.Combine(Fixtures.TinyModel, "tokenizer"));

        // ithq_pad_bang: the files diffusers' conversion script writes for microsoft/vq-diffusion-ithq.
        ClipPadBangDir = MakeClipFolder("ithq_pad_bang");
        foreach (string file in Directory.GetFiles(Path.Combine(Fixtures.IthqStructure, "tokenizer")))
        {
            File.Copy(file, Path.Combine(ClipPadBangDir, Path.GetFileName(file)));
        }

        ClipPadBang = CLIPTokenizer.FromFolder(ClipPadBangDir);

        // clip_pad_eos: openai/clip-vit-base-patch32's tokenizer files in the older layout (AddedToken dicts with
        // "__type", no added_tokens_decoder), pad = <|endoftext|>.
        string eosDir = MakeClipFolder("clip_pad_eos");
        File.WriteAllText(Path.Combine(eosDir, "tokenizer_config.json"), ClipLegacyTokenizerConfig);
        File.WriteAllText(Path.Combine(eosDir, "special_tokens_map.json"), ClipLegacySpecialTokensMap);
        ClipPadEos = CLIPTokenizer.FromFolder(eosDir);

        ClipNoConfig = CLIPTokenizer.FromFolder(MakeClipFolder("no_config"));
    }

    public CLIPTokenizer Tiny { get; }

    public string ClipPadBangDir { get; }

    public CLIPTokenizer ClipPadBang { get; }

    public CLIPTokenizer ClipPadEos { get; }

    public CLIPTokenizer ClipNoConfig { get; }

    public void Dispose() => _root.Dispose();

    private string MakeClipFolder(string name)
    {
        string dir = Path.Combine(_root.Path, name);
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(Fixtures.ClipVocab, "vocab.json"), Path.Combine(dir, "vocab.json"));
        File.Copy(Path.Combine(Fixtures.ClipVocab, "merges.txt"), Path.Combine(dir, "merges.txt"));
        return dir;
    }

    private const string ClipLegacyTokenizerConfig = """
        {
          "unk_token": {"content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "__type": "AddedToken"},
          "bos_token": {"content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "__type": "AddedToken"},
          "eos_token": {"content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "__type": "AddedToken"},
          "pad_token": "<|endoftext|>",
          "add_prefix_space": false,
          "errors": "replace",
          "do_lower_case": true,
          "name_or_path": "openai/clip-vit-base-patch32",
          "model_max_length": 77,
          "special_tokens_map_file": "./special_tokens_map.json",
          "tokenizer_class": "CLIPTokenizer"
        }
        """;

    private const string ClipLegacySpecialTokensMap = """
        {
          "bos_token": {"content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true},
          "eos_token": {"content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true},
          "unk_token": {"content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true},
          "pad_token": "<|endoftext|>"
        }
        """;
}
