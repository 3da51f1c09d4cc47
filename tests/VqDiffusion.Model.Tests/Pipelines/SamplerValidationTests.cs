using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>Every sampler and edit option out of range is rejected with its field and a readable reason; valid ones pass.</summary>
public sealed class SamplerValidationTests : IClassFixture<TinyPipelineFixture>
{
    private static readonly SamplerOptions Vq = new() { Kind = SamplerKind.VQDiffusion };

    private readonly VQDiffusionPipeline _pipeline;

    public SamplerValidationTests(TinyPipelineFixture fixture) => _pipeline = fixture.Pipeline;

    private static long[] Tokens(int images, long value = 5) => Enumerable.Repeat(value, images * 64).ToArray();

    private static int[] Schedule(Func<int, int> count) => Enumerable.Range(0, 100).Select(count).ToArray();

    private static GenerationRequest Prompt(SamplerOptions? sampler = null, EditOptions? edit = null) =>
        new() { Prompts = ["a red car"], Sampler = sampler, Edit = edit };

    public static TheoryData<string> InvalidCases() => new(Invalid.Keys);

    private static readonly Dictionary<string, (GenerationRequest Request, string Field, string Reason)> Invalid = new()
    {
        ["speed on diffusers"] = (Prompt(new SamplerOptions { Speed = 2 }), "sampler.speed", "is an option of the vq-diffusion sampler"),
        ["prior on diffusers"] = (Prompt(new SamplerOptions { Prior = UnmaskPrior.Purity }), "sampler.prior", "vq-diffusion"),
        ["schedule on diffusers"] = (Prompt(new SamplerOptions { UnmaskSchedule = Schedule(_ => 1) }), "sampler.unmask_schedule", "vq-diffusion"),
        ["unknown sampler"] = (Prompt(new SamplerOptions { Kind = (SamplerKind)7 }), "sampler.kind", "diffusers or vq-diffusion"),
        ["zero speed"] = (Prompt(Vq with { Speed = 0 }), "sampler.speed", "in (0, 100]"),
        ["NaN speed"] = (Prompt(Vq with { Speed = double.NaN }), "sampler.speed", "in (0, 100]"),
        ["speed above T"] = (Prompt(Vq with { Speed = 101 }), "sampler.speed", "in (0, 100]"),
        ["speed below one call's token"] = (Prompt(Vq with { Speed = 0.05, UnmaskSchedule = Schedule(t => t < 2 ? 1 : 0) }), "sampler.speed", "at least 0.1"),
        ["steps under vq-diffusion"] = (Prompt(Vq) with { NumInferenceSteps = 10 }, "num_inference_steps", "must be 100 (or unset)"),
        ["prior with fast"] = (Prompt(Vq with { Speed = 2, Prior = UnmaskPrior.Purity }), "sampler.prior", "sample_fast"),
        ["schedule with fast"] = (Prompt(Vq with { Speed = 4, UnmaskSchedule = Schedule(_ => 1) }), "sampler.unmask_schedule", "sample_fast"),
        ["weight without purity"] = (Prompt(Vq with { Prior = UnmaskPrior.HighQuality, PriorWeight = 1, UnmaskSchedule = Schedule(t => t < 10 ? 1 : 0) }), "sampler.prior_weight", "purity prior only"),
        ["negative weight"] = (Prompt(Vq with { Prior = UnmaskPrior.Purity, PriorWeight = -1 }), "sampler.prior_weight", "between 0 and 100"),
        ["default schedule larger than the grid"] = (Prompt(Vq with { Prior = UnmaskPrior.Purity }), "sampler.unmask_schedule", "the original's default unmask schedule for T = 100 unmasks 1024 tokens before t = 0 but the latent grid has 64 tokens"),
        ["speed below 1 with the default schedule"] = (Prompt(Vq with { Speed = 0.5 }), "sampler.unmask_schedule", "unmasks 1024 tokens"),
        ["short schedule"] = (Prompt(Vq with { Prior = UnmaskPrior.Purity, UnmaskSchedule = [1, 2, 3] }), "sampler.unmask_schedule", "one count per timestep (100"),
        ["schedule entry above the grid"] = (Prompt(Vq with { Prior = UnmaskPrior.Purity, UnmaskSchedule = Schedule(t => t == 40 ? 65 : 0) }), "sampler.unmask_schedule[40]", "between 0 and 64"),
        ["negative schedule entry"] = (Prompt(Vq with { UnmaskSchedule = Schedule(t => t == 3 ? -1 : 1) }), "sampler.unmask_schedule[3]", "between 0 and 64"),
        ["no step at t = 0 (plain)"] = (Prompt(Vq with { UnmaskSchedule = Schedule(t => t == 0 ? 0 : 1) }), "sampler.unmask_schedule[0]", "must be at least 1"),
        ["no step at t = 0 with masks left"] = (Prompt(Vq with { Prior = UnmaskPrior.Purity, UnmaskSchedule = Schedule(t => t is > 0 and <= 10 ? 1 : 0) }), "sampler.unmask_schedule[0]", "unmask only 10 of the 64 masked tokens"),
        ["schedule beyond the grid"] = (Prompt(Vq with { Prior = UnmaskPrior.HighQuality, UnmaskSchedule = Schedule(_ => 1) }), "sampler.unmask_schedule", "unmasks 99 tokens before t = 0"),
        ["schedule beyond the inpainting mask"] = (Prompt(Vq with { Prior = UnmaskPrior.HighQuality, UnmaskSchedule = Schedule(t => t > 0 && t <= 5 ? 1 : 0) }, new EditOptions { SourceTokens = Tokens(1), Mask = Enumerable.Range(0, 64).Select(p => p < 4).ToArray() }), "sampler.unmask_schedule", "only 4 masked tokens"),
        ["edit without a source"] = (Prompt(edit: new EditOptions { Strength = 0.5 }), "edit.source_tokens", "edit needs a source"),
        ["edit with two sources"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), SourceImage = new RgbImage(32, 32, new byte[32 * 32 * 3]), Strength = 0.5 }), "edit.source_image", "not both"),
        ["source tokens of the wrong size"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(2), Strength = 0.5 }), "edit.source_tokens", "must have images × H × W = 1 × 8 × 8 = 64 values, got 128"),
        ["the mask class as a source token"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1, 64), Strength = 0.5 }), "edit.source_tokens[0]", "not an image token"),
        ["a negative source token"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1, -1), Strength = 0.5 }), "edit.source_tokens[0]", "values must be in 0..63"),
        ["a source image of the wrong size"] = (Prompt(edit: new EditOptions { SourceImage = new RgbImage(64, 64, new byte[64 * 64 * 3]), Strength = 0.5 }), "edit.source_image", "output size 32 × 32, got 64 × 64"),
        ["zero strength"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 0 }), "edit.strength", "in (0, 1]"),
        ["strength above one"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 1.5 }), "edit.strength", "in (0, 1]"),
        ["strength below 1/T"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 0.005 }), "edit.strength", "at least 1/100"),
        ["neither strength nor mask"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1) }), "edit.strength", "and/or a mask"),
        ["a mask of the wrong size"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Mask = new bool[63] }), "edit.mask", "64 values"),
        ["an empty mask"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Mask = new bool[64] }), "edit.mask", "marks no token"),
        ["a mask image of the wrong size"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), MaskImage = new PixelMask(8, 8, Enumerable.Repeat(true, 64).ToArray()) }), "edit.mask_image", "output size 32 × 32, got 8 × 8"),
        ["two masks"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Mask = new bool[64], MaskImage = new PixelMask(32, 32, new bool[1024]) }), "edit.mask_image", "not both"),
        ["latents with an edit"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 0.5 }) with { InitialLatents = Tokens(1) }, "initial_latents", "cannot be combined with edit"),
        ["edit steps"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 0.5 }) with { NumInferenceSteps = 100 }, "num_inference_steps", "must be 50 (or unset)"),
        ["guidance in the original's editing"] = (Prompt(Vq, new EditOptions { SourceTokens = Tokens(1), Strength = 0.5 }) with { GuidanceScale = 5 }, "guidance_scale", "at most 1"),
        ["truncation in the original's editing"] = (Prompt(Vq, new EditOptions { SourceTokens = Tokens(1), Strength = 0.5 }) with { TruncationRate = 0.9f }, "truncation_rate", "must be 1"),
        ["speed in the original's editing"] = (Prompt(Vq with { Speed = 2 }, new EditOptions { SourceTokens = Tokens(1), Strength = 0.5 }), "sampler.speed", "DALLE.sample"),
    };

    [Theory]
    [MemberData(nameof(InvalidCases))]
    public void InvalidRequestsNameTheirField(string name)
    {
        var (request, field, reason) = Invalid[name];
        var ex = Assert.Throws<GenerationArgumentException>(() => _pipeline.Validate(request));
        Assert.Equal(field, ex.Field);
        Assert.Contains(reason, ex.Reason, StringComparison.Ordinal);
        Assert.Throws<GenerationArgumentException>(() => _pipeline.Start(request).Dispose());
    }

    public static TheoryData<string> ValidCases() => new(Valid.Keys);

    private static readonly Dictionary<string, (GenerationRequest Request, int Steps)> Valid = new()
    {
        ["plain"] = (Prompt(Vq), 100),
        ["speed 1.5 is plain"] = (Prompt(Vq with { Speed = 1.5 }), 100),
        ["fast 2"] = (Prompt(Vq with { Speed = 2 }), 51),
        ["fast 2.9 skips 1"] = (Prompt(Vq with { Speed = 2.9 }), 51),
        ["fast 4"] = (Prompt(Vq with { Speed = 4 }), 26),
        ["fast 100"] = (Prompt(Vq with { Speed = 100 }), 2),
        ["zeros skip timesteps"] = (Prompt(Vq with { UnmaskSchedule = Schedule(t => 1 - (t % 2)) }), 50),
        ["high quality, 5 tokens per call"] = (Prompt(Vq with { Speed = 0.5, UnmaskSchedule = Schedule(t => t == 99 ? 12 : t == 0 ? 1 : 0) }), 3 + 1),
        ["remainder of one merged"] = (Prompt(Vq with { Speed = 0.5, UnmaskSchedule = Schedule(t => t == 99 ? 6 : t == 0 ? 1 : 0) }), 1 + 1),
        // t = 0 skipped: the prior unmasks all 64 tokens before it.
        ["purity fitting the grid"] = (Prompt(Vq with { Prior = UnmaskPrior.Purity, PriorWeight = 2, UnmaskSchedule = Schedule(t => t is > 0 and <= 64 ? 1 : 0) }), 64),
        ["edit under the original"] = (Prompt(Vq, new EditOptions { SourceTokens = Tokens(1), Strength = 0.3 }) with { GuidanceScale = 0.5f }, 30),
        ["edit under diffusers"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 0.37 }), 37),
        ["inpainting under diffusers"] = (Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Mask = Enumerable.Range(0, 64).Select(p => p == 5).ToArray() }), 100),
    };

    [Theory]
    [MemberData(nameof(ValidCases))]
    public void ValidRequestsPlanTheirSteps(string name)
    {
        var (request, steps) = Valid[name];
        _pipeline.Validate(request);
        Assert.Equal(steps, _pipeline.PlannedTimesteps(request).Count);
        using DenoisingRun run = _pipeline.Start(request);
        Assert.Equal(steps, run.TotalSteps);
        Assert.Equal(_pipeline.PlannedTimesteps(request), run.Timesteps);
    }

    [Fact]
    public void DefaultsDependOnTheSamplerAndTheMode()
    {
        Assert.Equal((100, 5f), Resolved(Prompt()));
        Assert.Equal((100, 5f), Resolved(Prompt(Vq)));
        Assert.Equal((40, 5f), Resolved(Prompt(edit: new EditOptions { SourceTokens = Tokens(1), Strength = 0.4 })));
        Assert.Equal((40, 1f), Resolved(Prompt(Vq, new EditOptions { SourceTokens = Tokens(1), Strength = 0.4 })));
        Assert.Equal((100, 5f), Resolved(Prompt(Vq, new EditOptions { SourceTokens = Tokens(1), Mask = Enumerable.Repeat(true, 64).ToArray() })));
    }

    [Fact]
    public void FastInferenceReadsThePosteriorAtTMinusSkip()
    {
        var request = Prompt(Vq with { Speed = 4 });
        Assert.Equal(Enumerable.Range(0, 25).Select(i => 99L - (4 * i)).Append(0), _pipeline.PlannedTimesteps(request));
    }

    [Fact]
    public void ModelsWithoutLearnableEmbeddingsRejectLearnedOnes()
    {
        using var dir = new TempDirectory();
        CopyDirectory(Fixtures.TinyModel, dir.FullName);
        string cf = Path.Combine(dir.FullName, "learned_classifier_free_sampling_embeddings");
        Directory.Delete(cf, recursive: true);
        Directory.CreateDirectory(cf);
        File.WriteAllText(Path.Combine(cf, "config.json"), """{"_class_name": "LearnedClassifierFreeSamplingEmbeddings", "learnable": false, "hidden_size": null, "length": null}""");
        using var pipeline = VQDiffusionPipeline.FromPretrained(dir.FullName);
        var ex = Assert.Throws<GenerationArgumentException>(() => pipeline.Validate(Prompt(Vq with { ClassifierFreeEmbeddings = ClassifierFreeEmbeddings.Learned })));
        Assert.Equal("sampler.classifier_free_embeddings", ex.Field);
        pipeline.Validate(Prompt(Vq with { ClassifierFreeEmbeddings = ClassifierFreeEmbeddings.EmptyPrompt }));
    }

    [Theory]
    [InlineData(20, false)]
    [InlineData(50, true)]
    public void TheDefaultScheduleFollowsTheModelsTimesteps(int timesteps, bool hasDefault)
    {
        using var dir = new TempDirectory();
        CopyDirectory(Fixtures.TinyModel, dir.FullName);
        string config = Path.Combine(dir.FullName, "scheduler", "scheduler_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"num_train_timesteps\": 100", $"\"num_train_timesteps\": {timesteps}", StringComparison.Ordinal));
        using var pipeline = VQDiffusionPipeline.FromPretrained(dir.FullName);
        Assert.Equal(timesteps, pipeline.OriginalScheduler.NumTimesteps);

        // Plain and fast sampling need no schedule; every timestep is one network call.
        Assert.Equal(timesteps, pipeline.PlannedTimesteps(Prompt(Vq)).Count);
        // range(T - 1, -1, -4), plus t = 0 when the range does not end there.
        Assert.Equal(((timesteps - 1) / 4) + 1 + ((timesteps - 1) % 4 == 0 ? 0 : 1), pipeline.PlannedTimesteps(Prompt(Vq with { Speed = 4 })).Count);

        // A prior without a schedule: the original's list for T = 50 (which needs 1024 tokens), none for T = 20.
        var ex = Assert.Throws<GenerationArgumentException>(() => pipeline.Validate(Prompt(Vq with { Prior = UnmaskPrior.Purity })));
        Assert.Equal("sampler.unmask_schedule", ex.Field);
        Assert.Contains(hasDefault ? "the original's default unmask schedule for T = 50 unmasks 1014 tokens" : "no default unmask schedule for T = 20", ex.Reason, StringComparison.Ordinal);
        SamplerInfo vq = pipeline.DescribeSamplers()[1];
        Assert.Equal(hasDefault ? 1 : 0, vq.DefaultUnmaskSchedules.Count);
        Assert.Equal(1.0 / (1024 / timesteps), vq.MinSpeed);

        // With its own schedule (index = t) the prior runs.
        int[] schedule = Enumerable.Repeat(1, timesteps).ToArray();
        var request = Prompt(Vq with { Prior = UnmaskPrior.Purity, PriorWeight = 1, UnmaskSchedule = schedule }) with { Seed = 1 };
        GenerationResult result = pipeline.Generate(request);
        Assert.Equal(timesteps, result.Timesteps.Count);
    }

    [Fact]
    public void InitialLatentsStartTheOriginalSamplerAndBoundItsPrior()
    {
        // Half of each image given, half masked: a prior may unmask at most the 32 masked tokens before t = 0.
        long[] latents = Enumerable.Range(0, 128).Select(i => i % 64 < 32 ? (long)(i % 7) : 64).ToArray();
        GenerationRequest Request(int perTimestep) => new()
        {
            Prompts = ["a red car", "a cute puppy"],
            InitialLatents = latents,
            Seed = 3,
            Sampler = Vq with { Prior = UnmaskPrior.HighQuality, UnmaskSchedule = Schedule(t => t is > 0 and <= 16 ? perTimestep : t == 0 ? 1 : 0) },
        };
        var ex = Assert.Throws<GenerationArgumentException>(() => _pipeline.Validate(Request(3)));
        Assert.Contains("only 32 masked tokens", ex.Reason, StringComparison.Ordinal);

        using DenoisingRun run = _pipeline.Start(Request(2));
        Assert.Equal(latents, run.Tokens());
        while (!run.IsDone)
        {
            long[] tokens = run.Step().Tokens();
            int step = run.CompletedSteps;
            if (step < run.TotalSteps)
            {
                // The prior only unmasks masked positions: the given tokens stay until the last (plain) step.
                Assert.All(Enumerable.Range(0, 128).Where(i => latents[i] != 64), i => Assert.Equal(latents[i], tokens[i]));
                Assert.Equal(2 * (32 - (2 * step)), tokens.Count(t => t == 64));
            }
        }
    }

    [Fact]
    public void GetModelInfoFactsDescribeBothSamplers()
    {
        IReadOnlyList<SamplerInfo> samplers = _pipeline.DescribeSamplers();
        Assert.Equal(["diffusers", "vq-diffusion"], samplers.Select(s => s.Name));
        Assert.True(samplers[0].IsDefault);
        SamplerInfo vq = samplers[1];
        Assert.Equal((0.1, 100.0), (vq.MinSpeed, vq.MaxSpeed));
        Assert.Equal([(0.5, "high-quality", 0, 5), (1, "plain", 100, 0), (2, "fast", 51, 0), (3, "fast", 34, 0), (4, "fast", 26, 0), (5, "fast", 21, 0), (10, "fast", 11, 0)],
            vq.Speeds.Select(s => (s.Speed, s.Mode, s.NetworkCalls, s.TokensPerCall)));
        Assert.Equal(2, vq.DefaultUnmaskSchedules.Count);
        Assert.All(vq.DefaultUnmaskSchedules, s => Assert.False(s.FitsLatentGrid));
        Assert.Equal(1025, vq.DefaultUnmaskSchedules[0].Counts.Sum());
    }

    private (int Steps, float Guidance) Resolved(GenerationRequest request)
    {
        GenerationRequest resolved = _pipeline.WithDefaults(request);
        return (resolved.NumInferenceSteps!.Value, resolved.GuidanceScale!.Value);
    }

    private static void CopyDirectory(string source, string target)
    {
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        }

        foreach (string dir in Directory.GetDirectories(source))
        {
            CopyDirectory(dir, Path.Combine(target, Path.GetFileName(dir)));
        }
    }
}
