using System.Text.Json;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>
/// The cases of an "improved" golden set (outputs of the original microsoft/VQ-Diffusion samplers, see its README),
/// turned into <see cref="GenerationRequest"/>s from their manifest parameters alone, so that sets built the same way on
/// other models (other T, non-learnable embeddings, other speeds, ratios, prompts) plug in unchanged.
/// </summary>
public static class ImprovedGoldenCases
{
    /// <summary>One case: its request, the reference's batch row of each prompt-major image, and its tensors' file.</summary>
    /// <param name="Name">The case name.</param>
    /// <param name="File">Its safetensors file in the golden folder.</param>
    /// <param name="Request">The request that reproduces it.</param>
    /// <param name="Rows">Rows[i] = the reference batch row of prompt-major image i (the original's rows are [p0, p1, p0, p1]).</param>
    /// <param name="Steps">State updates (progress steps).</param>
    /// <param name="NetworkCalls">Transformer forwards of B rows.</param>
    public sealed record Case(string Name, string File, GenerationRequest Request, int[] Rows, int Steps, int NetworkCalls)
    {
        public bool IsEdit => Request.Edit is not null;

        /// <summary>Reference rows [B, …] reordered prompt-major.</summary>
        public T[] PromptMajor<T>(T[] referenceRows, int perRow)
        {
            var result = new T[referenceRows.Length];
            for (int i = 0; i < Rows.Length; i++)
            {
                Array.Copy(referenceRows, Rows[i] * perRow, result, i * perRow, perRow);
            }

            return result;
        }
    }

    /// <summary>
    /// The set's folder: <c>tests/fixtures/improved-tiny/golden</c>, or <c>$VQD_IMPROVED_GOLDEN</c> for another set built
    /// the same way (its manifest names its model).
    /// </summary>
    public static string GoldenDir =>
        Environment.GetEnvironmentVariable("VQD_IMPROVED_GOLDEN") is { Length: > 0 } other
            ? Path.GetFullPath(other)
            : Path.Combine(Fixtures.RepoRoot, "tests", "fixtures", "improved-tiny", "golden");

    /// <summary>
    /// The model the set was made with: the manifest's <c>model</c> path names a folder (e.g.
    /// <c>shared/golden/tiny-ithq/model</c>); the copy shipped in <c>models/</c> is used when there is one of that name,
    /// else the path relative to the repository or its parent.
    /// </summary>
    public static string ModelPath(string goldenDir)
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllText(Path.Combine(goldenDir, "manifest.json")));
        string model = doc.RootElement.GetProperty("model").GetString()!;
        string[] parts = model.Replace('\\', '/').TrimEnd('/').Split('/');
        string name = parts[^1] == "model" && parts.Length > 1 ? parts[^2] : parts[^1];
        foreach (string candidate in new[] { Path.Combine(Fixtures.RepoRoot, "models", name), Path.Combine(Fixtures.RepoRoot, model), Path.Combine(Fixtures.RepoRoot, "..", model) })
        {
            if (File.Exists(Path.Combine(candidate, "model_index.json")))
            {
                return Path.GetFullPath(candidate);
            }
        }

        throw new DirectoryNotFoundException($"the model of {goldenDir} ({model}) is neither in models/{name} nor at {model}.");
    }

    public static IReadOnlyList<Case> All(string goldenDir)
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllText(Path.Combine(goldenDir, "manifest.json")));
        var cases = new List<Case>();
        foreach (JsonProperty entry in doc.RootElement.GetProperty("cases").EnumerateObject())
        {
            cases.Add(Parse(goldenDir, entry.Name, entry.Value));
        }

        return cases;
    }

    public static Case Get(string goldenDir, string name) => All(goldenDir).Single(c => c.Name == name);

    private static Case Parse(string goldenDir, string name, JsonElement c)
    {
        JsonElement p = c.GetProperty("params");
        string[] prompts = p.GetProperty("prompts").EnumerateArray().Select(e => e.GetString()!).ToArray();
        ulong seed = p.GetProperty("seed").GetUInt64();
        string file = c.GetProperty("file").GetString()!;
        int steps = c.GetProperty("num_steps").GetInt32();
        int calls = c.GetProperty("num_model_calls").GetInt32();
        if (p.GetProperty("kind").GetString() == "edit")
        {
            // DALLE.sample: one row per prompt, no guidance, no truncation.
            using var tensors = SafeTensorsFile.Open(Path.Combine(goldenDir, file));
            using var content = tensors.Tensors["content_tokens_in"].Read();
            var edit = new GenerationRequest
            {
                Prompts = prompts,
                Seed = seed,
                Sampler = new SamplerOptions { Kind = SamplerKind.VQDiffusion },
                Edit = new EditOptions { SourceTokens = content.data<long>().ToArray(), Strength = p.GetProperty("filter_ratio").GetDouble() },
            };
            return new Case(name, file, edit, Enumerable.Range(0, prompts.Length).ToArray(), steps, calls);
        }

        int replicate = p.GetProperty("replicate").GetInt32();
        double speed = p.TryGetProperty("infer_speed", out JsonElement s) ? s.GetDouble() : 1.0;
        bool fast = (int)speed >= 2;
        int rule = p.GetProperty("prior_rule").GetInt32();
        UnmaskPrior prior = fast ? UnmaskPrior.None : rule switch
        {
            1 => UnmaskPrior.HighQuality,
            2 => UnmaskPrior.Purity,
            _ => UnmaskPrior.None,
        };
        int[]? schedule = !fast && c.TryGetProperty("n_sample", out JsonElement n) && n.ValueKind == JsonValueKind.Array
            ? n.EnumerateArray().Select(v => v.GetInt32()).ToArray()
            : null;
        var request = new GenerationRequest
        {
            Prompts = prompts,
            NumImagesPerPrompt = replicate,
            GuidanceScale = (float)p.GetProperty("guidance_scale").GetDouble(),
            TruncationRate = (float)p.GetProperty("truncation_rate").GetDouble(),
            Seed = seed,
            Sampler = new SamplerOptions
            {
                Kind = SamplerKind.VQDiffusion,
                Speed = speed,
                Prior = prior,
                PriorWeight = fast ? 0 : p.GetProperty("prior_weight").GetDouble(),
                UnmaskSchedule = schedule,
                ClassifierFreeEmbeddings = p.GetProperty("learnable_cf").GetBoolean() ? ClassifierFreeEmbeddings.Learned : ClassifierFreeEmbeddings.EmptyPrompt,
            },
        };

        // generate_content replicates the prompt batch: rows [p0, p1, ..., p0, p1, ...].
        var rows = new int[prompts.Length * replicate];
        for (int prompt = 0; prompt < prompts.Length; prompt++)
        {
            for (int k = 0; k < replicate; k++)
            {
                rows[(prompt * replicate) + k] = (k * prompts.Length) + prompt;
            }
        }

        return new Case(name, file, request, rows, steps, calls);
    }

    /// <summary>Reads every tensor of a case's file.</summary>
    public static Dictionary<string, TorchSharp.torch.Tensor> Load(string goldenDir, string file)
    {
        using var f = SafeTensorsFile.Open(Path.Combine(goldenDir, file));
        return f.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Read());
    }
}
