using TorchSharp;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>Paths of the fixtures copied into the repository (tests/fixtures, models/).</summary>
public static class Fixtures
{
    private static readonly Lazy<string> Root = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VqDiffusion.Grpc.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("repository root (VqDiffusion.Grpc.sln) not found above " + AppContext.BaseDirectory);
    });

    public static string RepoRoot => Root.Value;

    /// <summary>The tiny diffusers pipeline folder shipped in the repo.</summary>
    public static string TinyModel => Path.Combine(RepoRoot, "models", "tiny-ithq");

    /// <summary>Golden outputs of the genuine diffusers code for <see cref="TinyModel"/>.</summary>
    public static string TinyGolden => Path.Combine(RepoRoot, "tests", "fixtures", "tiny-ithq", "golden");

    public static string IthqStructure => Path.Combine(RepoRoot, "tests", "fixtures", "ithq-structure");

    public static string ClipVocab => Path.Combine(RepoRoot, "tests", "fixtures", "clip-vocab");

    public static string ClipVocabTokens => Path.Combine(RepoRoot, "tests", "fixtures", "clip-vocab-tokens.json");

    /// <summary>Reads every tensor of a golden safetensors file.</summary>
    public static Dictionary<string, torch.Tensor> LoadGolden(string fileName)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(TinyGolden, fileName));
        return file.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Read());
    }
}
