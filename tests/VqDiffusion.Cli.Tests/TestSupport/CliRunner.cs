using System.Globalization;
using System.Text.Json;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Cli.Tests.TestSupport;

/// <summary>Runs <c>vqd</c> in-process and builds the flags of a golden run.</summary>
public static class CliRunner
{
    public static async Task<(int Code, string Out, string Err)> RunAsync(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await CliApp.RunAsync(args, stdout, stderr, CancellationToken.None);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>
    /// The flags of a golden run, without <c>--model</c>/<c>--server</c> and <c>--output</c>; user latents
    /// are written as a <c>--latents</c> JSON file in <paramref name="latentsDir"/>.
    /// </summary>
    public static List<string> GoldenFlags(GoldenPipelineRuns.Run run, string latentsDir)
    {
        var args = new List<string>();
        foreach (string p in run.Request.Prompts)
        {
            args.AddRange(["--prompt", p]);
        }

        args.AddRange([
            "--steps", run.Request.NumInferenceSteps!.Value.ToString(CultureInfo.InvariantCulture),
            "--guidance-scale", run.Request.GuidanceScale!.Value.ToString("R", CultureInfo.InvariantCulture),
            "--truncation-rate", run.Request.TruncationRate.ToString("R", CultureInfo.InvariantCulture),
            "--images-per-prompt", run.Request.NumImagesPerPrompt.ToString(CultureInfo.InvariantCulture),
            "--seed", run.Request.Seed!.Value.ToString(CultureInfo.InvariantCulture),
        ]);
        if (run.Request.InitialLatents is { } latents)
        {
            int pixels = latents.Count / run.Request.BatchSize;
            string file = Path.Combine(latentsDir, run.Name + "-latents.json");
            File.WriteAllText(file, JsonSerializer.Serialize(latents.Chunk(pixels).ToArray()));
            args.AddRange(["--latents", file]);
        }

        return args;
    }
}
