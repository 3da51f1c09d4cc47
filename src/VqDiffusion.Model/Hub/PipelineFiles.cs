using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Hub;

/// <summary>
/// The files of a diffusers <c>VQDiffusionPipeline</c> repository that loading it needs, chosen from a file list (the
/// Hub's, or a cached snapshot's): <c>model_index.json</c>; per component its configs and tokenizer files (the
/// <c>.json</c> and <c>.txt</c> files of its folder); and the weights <see cref="WeightsLocator"/> picks, as the loader
/// will (the variant first, <c>.safetensors</c> before <c>.bin</c>), with the shards a shard index lists.
/// </summary>
public static class PipelineFiles
{
    public const string ModelIndexFile = "model_index.json";

    /// <summary>Components the pipeline loads, and whether it cannot do without them.</summary>
    private static readonly (string Name, bool Required, bool HasWeights, string[] RequiredFiles)[] Components =
    [
        ("tokenizer", true, false, ["vocab.json", "merges.txt"]),
        ("text_encoder", true, true, ["config.json"]),
        ("transformer", true, true, ["config.json"]),
        ("vqvae", true, true, ["config.json"]),
        ("scheduler", true, false, ["scheduler_config.json"]),
        ("learned_classifier_free_sampling_embeddings", false, false, ["config.json"]),
    ];

    /// <summary>
    /// The files to fetch besides <c>model_index.json</c>, read from <paramref name="modelIndexPath"/>. Shard indexes are
    /// in the list; <see cref="Shards"/> adds their shards once they are present. Throws a <see cref="ModelLoadException"/>
    /// naming what <paramref name="where"/> lacks.
    /// </summary>
    public static IReadOnlyList<string> Select(IReadOnlyCollection<string> files, string modelIndexPath, string? variant, string where)
    {
        ArgumentNullException.ThrowIfNull(files);
        var set = files as IReadOnlySet<string> ?? new HashSet<string>(files, StringComparer.Ordinal);
        ModelIndex index = ModelIndex.Load(modelIndexPath);
        var selected = new List<string>();
        foreach (var (name, required, hasWeights, requiredFiles) in Components)
        {
            string prefix = name + "/";
            var inFolder = set.Where(f => f.StartsWith(prefix, StringComparison.Ordinal) && f.IndexOf('/', prefix.Length) < 0).ToList();
            if (inFolder.Count == 0)
            {
                if (required)
                {
                    throw new ModelLoadException($"{where}: component folder '{name}' is missing (model_index.json lists: {string.Join(", ", index.Components.Keys)}).");
                }

                continue;
            }

            foreach (string file in requiredFiles.Where(f => !set.Contains(prefix + f)))
            {
                throw new ModelLoadException($"{where}: '{prefix}{file}' is missing.");
            }

            selected.AddRange(inFolder.Where(f => (f.EndsWith(".json", StringComparison.Ordinal) || f.EndsWith(".txt", StringComparison.Ordinal)) && !WeightsLocator.IsShardIndex(f)).Order(StringComparer.Ordinal));

            // The learned classifier-free embeddings have weights only when learnable; load decides from the config.
            string? weights = WeightsLocator.Choose(f => set.Contains(prefix + f), variant);
            if (weights is not null)
            {
                selected.Add(prefix + weights);
            }
            else if (hasWeights)
            {
                throw new ModelLoadException($"{where}: '{name}': {WeightsLocator.NotFoundMessage(variant)}");
            }
        }

        return selected;
    }

    /// <summary>The shards (repository paths) listed by a shard index that is present at <paramref name="indexPath"/>.</summary>
    public static IReadOnlyList<string> Shards(string indexRepoPath, string indexPath, IReadOnlyCollection<string> files, string where)
    {
        string folder = indexRepoPath.Contains('/', StringComparison.Ordinal) ? indexRepoPath[..(indexRepoPath.LastIndexOf('/') + 1)] : string.Empty;
        var shards = WeightsLocator.ShardNames(indexPath).Select(s => folder + s).ToList();
        foreach (string missing in shards.Where(s => !files.Contains(s)))
        {
            throw new ModelLoadException($"{where}: shard '{missing}' listed in {indexRepoPath} is missing.");
        }

        return shards;
    }
}
