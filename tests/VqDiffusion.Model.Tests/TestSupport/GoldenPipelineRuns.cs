using System.Text.Json;
using System.Text.RegularExpressions;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>
/// The full-pipeline runs listed in the golden manifest (<c>cases.pipeline.runs</c>), turned into
/// <see cref="GenerationRequest"/>s. Data-driven so fixtures of other sizes plug in unchanged.
/// </summary>
public static partial class GoldenPipelineRuns
{
    public sealed record Run(string Name, string File, GenerationRequest Request, bool HasUserLatents);

    public static IReadOnlyList<Run> All(string goldenDir)
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllText(Path.Combine(goldenDir, "manifest.json")));
        var runs = new List<Run>();
        foreach (var run in doc.RootElement.GetProperty("cases").GetProperty("pipeline").GetProperty("runs").EnumerateObject())
        {
            JsonElement args = run.Value.GetProperty("args");
            JsonElement prompt = args.GetProperty("prompt");
            string[] prompts = prompt.ValueKind == JsonValueKind.String
                ? [prompt.GetString()!]
                : prompt.EnumerateArray().Select(p => p.GetString()!).ToArray();
            string generator = run.Value.GetProperty("generator").GetString()!;
            ulong seed = ulong.Parse(SeedPattern().Match(generator).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            string file = run.Value.GetProperty("file").GetString()!;
            bool hasLatents = run.Value.TryGetProperty("latents", out var latents) && latents.ValueKind != JsonValueKind.Null;
            IReadOnlyList<long>? initial = null;
            if (hasLatents)
            {
                using var f = Model.Loading.SafeTensorsFile.Open(Path.Combine(goldenDir, file));
                using var t = f.Tensors["latents"].Read();
                initial = t.data<long>().ToArray();
            }

            var request = new GenerationRequest
            {
                Prompts = prompts,
                NumInferenceSteps = args.GetProperty("num_inference_steps").GetInt32(),
                GuidanceScale = (float)args.GetProperty("guidance_scale").GetDouble(),
                TruncationRate = (float)args.GetProperty("truncation_rate").GetDouble(),
                NumImagesPerPrompt = args.GetProperty("num_images_per_prompt").GetInt32(),
                Seed = seed,
                InitialLatents = initial,
            };
            runs.Add(new Run(run.Name, file, request, hasLatents));
        }

        return runs;
    }

    [GeneratedRegex(@"manual_seed\((\d+)\)")]
    private static partial Regex SeedPattern();
}
