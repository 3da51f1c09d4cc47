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

    /// <summary>
    /// The flags of an improved golden case (<c>--sampler vq-diffusion</c> and its options), without
    /// <c>--model</c>/<c>--server</c> and <c>--output</c>; schedules and edit sources are written as JSON files in
    /// <paramref name="dir"/>.
    /// </summary>
    public static List<string> ImprovedFlags(ImprovedGoldenCases.Case c, string dir)
    {
        var r = c.Request;
        var args = new List<string>();
        foreach (string p in r.Prompts)
        {
            args.AddRange(["--prompt", p]);
        }

        args.AddRange(["--images-per-prompt", r.NumImagesPerPrompt.ToString(CultureInfo.InvariantCulture), "--seed", r.Seed!.Value.ToString(CultureInfo.InvariantCulture)]);
        if (r.GuidanceScale is { } guidance)
        {
            args.AddRange(["--guidance-scale", guidance.ToString("R", CultureInfo.InvariantCulture)]);
        }

        if (r.TruncationRate != Model.Pipelines.GenerationRequest.DefaultTruncationRate)
        {
            args.AddRange(["--truncation-rate", r.TruncationRate.ToString("R", CultureInfo.InvariantCulture)]);
        }

        var s = r.SamplerOrDefault;
        args.AddRange(["--sampler", Model.Pipelines.SamplerNames.Name(s.Kind)]);
        if (s.Speed != Model.Pipelines.SamplerOptions.DefaultSpeed)
        {
            args.AddRange(["--speed", s.Speed.ToString("R", CultureInfo.InvariantCulture)]);
        }

        if (s.Prior != Model.Pipelines.UnmaskPrior.None)
        {
            args.AddRange(["--prior", Model.Pipelines.SamplerNames.Name(s.Prior)]);
        }

        if (s.PriorWeight != 0)
        {
            args.AddRange(["--prior-weight", s.PriorWeight.ToString("R", CultureInfo.InvariantCulture)]);
        }

        if (s.ClassifierFreeEmbeddings != Model.Pipelines.ClassifierFreeEmbeddings.ModelDefault)
        {
            args.AddRange(["--cf-embeddings", Model.Pipelines.SamplerNames.Name(s.ClassifierFreeEmbeddings)]);
        }

        if (s.UnmaskSchedule is { } schedule)
        {
            string file = Path.Combine(dir, c.Name + "-schedule.json");
            File.WriteAllText(file, JsonSerializer.Serialize(schedule));
            args.AddRange(["--unmask-schedule", file]);
        }

        if (r.Edit is { } edit)
        {
            string file = Path.Combine(dir, c.Name + "-source.json");
            IReadOnlyList<long> tokens = edit.SourceTokens!;
            File.WriteAllText(file, JsonSerializer.Serialize(tokens.Chunk(tokens.Count / r.BatchSize).ToArray()));
            args.AddRange(["--edit-tokens", file]);
            if (edit.Strength is { } strength)
            {
                args.AddRange(["--strength", strength.ToString("R", CultureInfo.InvariantCulture)]);
            }
        }

        return args;
    }
}
