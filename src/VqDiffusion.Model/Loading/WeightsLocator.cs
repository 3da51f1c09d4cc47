using System.Text.Json;

namespace VqDiffusion.Model.Loading;

/// <summary>
/// Finds the weights of one component folder the way diffusers / transformers name them:
/// <c>diffusion_pytorch_model</c>, <c>model</c> or <c>pytorch_model</c>, as <c>.safetensors</c>
/// (preferred) or <c>.bin</c>, single file or sharded through <c>*.index.json</c>, optionally with a
/// variant (<c>diffusion_pytorch_model.fp16.safetensors</c>, <c>*.safetensors.index.fp16.json</c>).
/// A requested variant that is absent falls back to the plain file names.
/// </summary>
public static class WeightsLocator
{
    private static readonly string[] BaseNames = ["diffusion_pytorch_model", "model", "pytorch_model"];
    private static readonly string[] Extensions = [".safetensors", ".bin"];

    /// <summary>Returns the weight files of <paramref name="componentDir"/> (one or more shards).</summary>
    public static IReadOnlyList<string> Locate(string componentDir, string? variant = null)
    {
        if (!Directory.Exists(componentDir))
        {
            throw new ModelLoadException($"{componentDir}: component folder does not exist.");
        }

        string? chosen = Choose(name => File.Exists(Path.Combine(componentDir, name)), variant);
        if (chosen is null)
        {
            throw new ModelLoadException($"{componentDir}: {NotFoundMessage(variant)}");
        }

        string path = Path.Combine(componentDir, chosen);
        return IsShardIndex(chosen) ? ReadShardIndex(path) : [path];
    }

    /// <summary>
    /// The file name (within a component folder) that <see cref="Locate"/> would pick: a single weights file or a
    /// shard index (<see cref="IsShardIndex"/>), or null when there is none. <paramref name="exists"/> answers for a
    /// file name in the folder, so the same choice runs over a folder or over a Hub repository's file list.
    /// </summary>
    public static string? Choose(Func<string, bool> exists, string? variant = null)
    {
        ArgumentNullException.ThrowIfNull(exists);
        var variants = string.IsNullOrEmpty(variant) ? new[] { (string?)null } : new[] { variant, null };
        foreach (string? v in variants)
        {
            foreach (string ext in Extensions)
            {
                foreach (string baseName in BaseNames)
                {
                    string single = v is null ? baseName + ext : $"{baseName}.{v}{ext}";
                    if (exists(single))
                    {
                        return single;
                    }

                    string index = v is null ? $"{baseName}{ext}.index.json" : $"{baseName}{ext}.index.{v}.json";
                    if (!exists(index) && v is not null)
                    {
                        // transformers' variant index naming: model.fp16.safetensors.index.json
                        index = $"{baseName}.{v}{ext}.index.json";
                    }

                    if (exists(index))
                    {
                        return index;
                    }
                }
            }
        }

        return null;
    }

    /// <summary>True for a shard index name (<c>*.index.json</c>, <c>*.index.fp16.json</c>).</summary>
    public static bool IsShardIndex(string fileName) =>
        fileName.EndsWith(".json", StringComparison.Ordinal) && fileName.Contains(".index", StringComparison.Ordinal);

    /// <summary>The shard file names listed in a shard index's <c>weight_map</c> (distinct, in order).</summary>
    public static IReadOnlyList<string> ShardNames(string indexPath) => ReadShardNames(indexPath);

    /// <summary>"no weights file found (looked for …)", for a component without weights.</summary>
    public static string NotFoundMessage(string? variant)
    {
        string names = string.Join(", ", BaseNames.SelectMany(b => Extensions.Select(e => b + e)));
        return $"no weights file found (looked for {names}{(variant is null ? string.Empty : $" and the '{variant}' variant")}, single or sharded with *.index.json).";
    }

    private static List<string> ReadShardIndex(string indexPath)
    {
        string dir = Path.GetDirectoryName(indexPath)!;
        var shards = ReadShardNames(indexPath).Select(f => Path.Combine(dir, f)).ToList();
        foreach (string shard in shards.Where(s => !File.Exists(s)))
        {
            throw new ModelLoadException($"{indexPath}: shard '{Path.GetFileName(shard)}' listed in weight_map does not exist.");
        }

        return shards;
    }

    private static List<string> ReadShardNames(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            var shards = doc.RootElement.GetProperty("weight_map").EnumerateObject()
                .Select(p => p.Value.GetString() ?? throw new ModelLoadException($"{indexPath}: weight_map entry '{p.Name}' is not a file name."))
                .Distinct(StringComparer.Ordinal)
                .ToList();
            if (shards.Count == 0)
            {
                throw new ModelLoadException($"{indexPath}: weight_map is empty.");
            }

            return shards;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ModelLoadException($"{indexPath}: not a valid shard index ({ex.Message}).", ex);
        }
    }

    /// <summary>Opens a weights file by its extension.</summary>
    public static IWeightsFile Open(string path) =>
        path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            ? SafeTensorsFile.Open(path)
            : PyTorchCheckpointFile.Open(path);
}
