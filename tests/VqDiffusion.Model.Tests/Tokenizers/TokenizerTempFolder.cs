using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Model.Tests.Tokenizers;

/// <summary>A temporary folder for tokenizer files, deleted on dispose.</summary>
public sealed class TokenizerTempFolder : IDisposable
{
    public TokenizerTempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "vqd-tokenizer-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>A folder holding the tiny model's vocab.json and merges.txt only.</summary>
    public static TokenizerTempFolder WithTinyVocab()
    {
        var folder = new TokenizerTempFolder();
        foreach (string name in new[] { "vocab.json", "merges.txt" })
        {
            File.Copy(System.IO.Path.Combine(Fixtures.TinyModel, "tokenizer", name), System.IO.Path.Combine(folder.Path, name));
        }

        return folder;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }
}
