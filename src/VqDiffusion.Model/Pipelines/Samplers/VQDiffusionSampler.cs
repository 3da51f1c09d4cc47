using System.Globalization;
using VqDiffusion.Model.Schedulers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// The original microsoft/VQ-Diffusion samplers (<c>DALLE.generate_content</c> and <c>DALLE.sample</c> over
/// <c>DiffusionTransformer.sample</c> / <c>sample_fast</c> / <c>p_sample</c>), exact with that code:
/// <list type="bullet">
/// <item>speed below 2: <c>sample()</c>, every timestep T−1 … 0; with a prior (or a speed below 1, "high-quality
/// inference") the scheduled tokens of each timestep are unmasked at most <c>prior_ps</c> per network call, chosen by
/// the prior (<c>prior_rule</c> 1 uniform, 2 purity) with the original's multinomial;</item>
/// <item>speed ≥ 2: <c>sample_fast(skip = ⌊speed⌋ − 1)</c>, the network at t and the posterior at t − skip;</item>
/// <item>an edit with a strength: <c>DALLE.sample</c>, one <c>q_sample</c> at ⌊T · strength⌋ − 1 and a plain step per
/// timestep (no guidance, no truncation).</item>
/// </list>
/// Guidance mixes separately clamped conditional and unconditional predictions (two forwards of B rows, conditional
/// first); truncation keeps the mask row and drops to −70; the batch is the prompts repeated (<c>[p0, p1, p0, p1]</c>).
/// </summary>
internal sealed class VQDiffusionSampler : ISampler
{
    /// <summary>The original skips the unconditional branch when |guidance − 1| is below this.</summary>
    public const double GuidanceTolerance = 1e-3;

    /// <summary>An upper bound on the purity prior's weight r (the original has none; beyond it the reweighted log-probabilities overflow).</summary>
    public const double MaxPriorWeight = 100;

    /// <summary>
    /// What the original's v1 step sets every image's unmasked count to (<c>sampled = [1024] * B</c>): a timestep
    /// scheduled to unmask more would loop forever there.
    /// </summary>
    private const int V1SampledCount = 1024;

    private readonly VQDiffusionPipeline _pipeline;

    public VQDiffusionSampler(VQDiffusionPipeline pipeline) => _pipeline = pipeline;

    public SamplerKind Kind => SamplerKind.VQDiffusion;

    private int NumTimesteps => _pipeline.OriginalScheduler.NumTimesteps;

    private int NumLatentPixels => _pipeline.transformer.NumLatentPixels;

    /// <summary>Whether the original runs the unconditional branch at this scale.</summary>
    public static bool Guides(float guidanceScale) => !(Math.Abs(guidanceScale - 1.0) < GuidanceTolerance);

    /// <summary>The fast sampler's skip for a speed (0 below 2: every timestep).</summary>
    public static int Skip(double speed) => (int)speed >= 2 ? (int)speed - 1 : 0;

    /// <summary>The original's <c>prior_rule</c> for the options: a speed below 1 turns 0 into 1.</summary>
    public static int PriorRule(SamplerOptions options)
    {
        int rule = options.Prior switch
        {
            UnmaskPrior.HighQuality => 1,
            UnmaskPrior.Purity => 2,
            _ => 0,
        };
        return rule == 0 && options.Speed < 1 ? 1 : rule;
    }

    /// <summary>The original's <c>prior_ps</c>: <c>int(1024 // T · speed)</c> below speed 1, else 1024.</summary>
    public static int PriorPs(int numTimesteps, double speed) =>
        speed < 1 ? (int)((UnmaskSchedules.OriginalGridTokens / numTimesteps) * speed) : UnmaskSchedules.OriginalGridTokens;

    /// <summary>Network calls the prior needs to unmask <paramref name="count"/> tokens at most <paramref name="priorPs"/> per call.</summary>
    public static int PriorCalls(int count, int priorPs)
    {
        int calls = 0;
        for (int sampled = 0; sampled < count; calls++)
        {
            sampled += PriorCount(count, sampled, priorPs);
        }

        return calls;
    }

    /// <summary>
    /// Tokens one image unmasks in one call: <c>min(to_sample − sampled, prior_ps)</c>, or all that are left when
    /// exactly one would remain.
    /// </summary>
    public static int PriorCount(int toSample, int sampled, int priorPs)
    {
        int n = Math.Min(toSample - sampled, priorPs);
        return toSample - sampled - n == 1 ? toSample - sampled : n;
    }

    /// <summary>The schedule a validated request uses: its own, or the original's for the model's T; null where neither exists.</summary>
    public int[]? Schedule(SamplerOptions options) =>
        options.UnmaskSchedule?.ToArray() ?? UnmaskSchedules.Default(NumTimesteps, PriorPs(NumTimesteps, options.Speed));

    public GenerationRequest WithDefaults(GenerationRequest request)
    {
        bool noised = request.Edit?.Strength is not null;
        return request with
        {
            NumInferenceSteps = request.NumInferenceSteps ?? (request.Edit?.Strength is double s ? SamplingStart.EditStartStep(NumTimesteps, s) : NumTimesteps),
            GuidanceScale = request.GuidanceScale ?? (noised ? 1.0f : GenerationRequest.DefaultGuidanceScale),
        };
    }

    public void Validate(GenerationRequest request, SamplingStart start)
    {
        SamplerOptions options = request.SamplerOrDefault;
        double speed = options.Speed;
        if (!double.IsFinite(speed) || speed <= 0 || speed > NumTimesteps)
        {
            throw new GenerationArgumentException("sampler.speed", $"sampler.speed must be a number in (0, {NumTimesteps}] (1 = every timestep, ≥ 2 = fast, < 1 = high-quality), got {Format(speed)}.");
        }

        if (!double.IsFinite(options.PriorWeight) || options.PriorWeight < 0 || options.PriorWeight > MaxPriorWeight)
        {
            throw new GenerationArgumentException("sampler.prior_weight", $"sampler.prior_weight must be between 0 and {MaxPriorWeight}, got {Format(options.PriorWeight)}.");
        }

        if (start.EditStrength is not null)
        {
            ValidateNoisedEdit(request, options);
            return;
        }

        if (Skip(speed) > 0)
        {
            RequireUnset(options, "fast inference (sampler.speed ≥ 2, the original's sample_fast)");
            return;
        }

        int rule = PriorRule(options);
        int priorPs = PriorPs(NumTimesteps, speed);
        if (rule > 0 && priorPs < 1)
        {
            double minimum = 1.0 / (UnmaskSchedules.OriginalGridTokens / NumTimesteps);
            throw new GenerationArgumentException("sampler.speed",
                $"sampler.speed {Format(speed)} unmasks int({UnmaskSchedules.OriginalGridTokens} // {NumTimesteps} × {Format(speed)}) = {priorPs} tokens per network call; it must be at least {Format(minimum)} for T = {NumTimesteps}.");
        }

        if (options.PriorWeight > 0 && rule != 2)
        {
            throw new GenerationArgumentException("sampler.prior_weight", "sampler.prior_weight applies to the purity prior only (sampler.prior = purity).");
        }

        ValidateSchedule(options, rule, priorPs, start);
    }

    public void ValidateSteps(GenerationRequest request)
    {
        int steps = request.NumInferenceSteps!.Value;
        if (request.Edit?.Strength is double strength)
        {
            int startStep = SamplingStart.EditStartStep(NumTimesteps, strength);
            if (steps != startStep)
            {
                throw new GenerationArgumentException("num_inference_steps",
                    $"num_inference_steps must be {startStep} (or unset) when editing with strength {Format(strength)}: the steps are the timesteps {startStep - 1} … 0, got {steps}.");
            }
        }
        else if (steps != NumTimesteps)
        {
            throw new GenerationArgumentException("num_inference_steps",
                $"num_inference_steps must be {NumTimesteps} (or unset): the vq-diffusion sampler denoises every training timestep; sampler.speed sets the network calls. Got {steps}.");
        }
    }

    private static void ValidateNoisedEdit(GenerationRequest request, SamplerOptions options)
    {
        const string Why = "editing with a strength under the vq-diffusion sampler is the original's DALLE.sample";
        if (request.GuidanceScale > 1)
        {
            throw new GenerationArgumentException("guidance_scale",
                $"guidance_scale must be at most 1 (no guidance) or unset: {Why}, which has no classifier-free guidance; got {request.GuidanceScale!.Value.ToString(CultureInfo.InvariantCulture)}.");
        }

        if (request.TruncationRate != 1.0f)
        {
            throw new GenerationArgumentException("truncation_rate",
                $"truncation_rate must be 1 (none) or unset: {Why}, which does not truncate; got {request.TruncationRate.ToString(CultureInfo.InvariantCulture)}.");
        }

        if (options.Speed != SamplerOptions.DefaultSpeed)
        {
            throw new GenerationArgumentException("sampler.speed", $"sampler.speed must be 1 (or unset): {Why}, which runs every timestep from the noised source.");
        }

        RequireUnset(options, Why);
    }

    private static void RequireUnset(SamplerOptions options, string why)
    {
        if (options.Prior != UnmaskPrior.None)
        {
            throw new GenerationArgumentException("sampler.prior", $"sampler.prior must be none: {why} has no prior.");
        }

        if (options.PriorWeight != 0)
        {
            throw new GenerationArgumentException("sampler.prior_weight", $"sampler.prior_weight must be 0: {why} has no prior.");
        }

        if (options.UnmaskSchedule is not null)
        {
            throw new GenerationArgumentException("sampler.unmask_schedule", $"sampler.unmask_schedule must be empty: {why} has no unmask schedule.");
        }
    }

    private void ValidateSchedule(SamplerOptions options, int rule, int priorPs, SamplingStart start)
    {
        int pixels = NumLatentPixels;
        if (options.UnmaskSchedule is { } explicitSchedule)
        {
            if (explicitSchedule.Count != NumTimesteps)
            {
                throw new GenerationArgumentException("sampler.unmask_schedule",
                    $"sampler.unmask_schedule must have one count per timestep ({NumTimesteps}, index = t), got {explicitSchedule.Count}.");
            }

            for (int t = 0; t < explicitSchedule.Count; t++)
            {
                int n = explicitSchedule[t];
                bool v1 = rule == 0 || t == 0;
                int max = v1 ? Math.Min(pixels, V1SampledCount) : pixels;
                if (n < 0 || n > max)
                {
                    throw new GenerationArgumentException($"sampler.unmask_schedule[{t}]",
                        $"sampler.unmask_schedule[{t}] must be between 0 and {max} (the latent grid has {pixels} tokens{(v1 && max < pixels ? $"; a plain step counts as {V1SampledCount}" : string.Empty)}), got {n}.");
                }
            }
        }

        // The original skips a timestep whose count is 0, t = 0 included; only the step at t = 0 draws every
        // remaining masked token, and the decoder has no code for the mask class.
        if (options.UnmaskSchedule is { } given && given[0] == 0 && (rule == 0 || UnmaskSchedules.TokensBeforeLastStep(given) < start.MinMaskedTokens))
        {
            throw new GenerationArgumentException("sampler.unmask_schedule[0]",
                $"sampler.unmask_schedule[0] must be at least 1: the step at t = 0 draws every token still masked, and {(rule == 0 ? "plain steps leave masked tokens before it" : $"the counts for t ≥ 1 unmask only {UnmaskSchedules.TokensBeforeLastStep(given)} of the {start.MinMaskedTokens} masked tokens")}.");
        }

        if (rule == 0)
        {
            return; // v1: each timestep with a count ≥ 1 is one network call (every timestep without a schedule).
        }

        int[]? schedule = Schedule(options);
        if (schedule is null)
        {
            throw new GenerationArgumentException("sampler.unmask_schedule",
                $"sampler.unmask_schedule is required: the original has no default unmask schedule for T = {NumTimesteps} (only for T = 100, 50, 25 and 10); give {NumTimesteps} counts, index = t.");
        }

        long before = UnmaskSchedules.TokensBeforeLastStep(schedule);
        if (before > start.MinMaskedTokens)
        {
            string which = options.UnmaskSchedule is null ? $"the original's default unmask schedule for T = {NumTimesteps}" : "sampler.unmask_schedule";
            string masked = start.MinMaskedTokens == pixels ? $"the latent grid has {pixels} tokens" : $"the start has only {start.MinMaskedTokens} masked tokens";
            throw new GenerationArgumentException("sampler.unmask_schedule",
                $"{which} unmasks {before} tokens before t = 0 but {masked}; give a schedule (index = t) whose counts for t ≥ 1 sum to at most {start.MinMaskedTokens}.");
        }
    }

    public SamplerInfo Describe()
    {
        int perStep = UnmaskSchedules.OriginalGridTokens / NumTimesteps;
        double minSpeed = perStep >= 1 ? 1.0 / perStep : SamplerOptions.DefaultSpeed;
        var speeds = new List<SpeedInfo>();
        foreach (double speed in new[] { 0.5, 1, 2, 3, 4, 5, 10 })
        {
            if (speed < minSpeed || speed > NumTimesteps)
            {
                continue;
            }

            var options = new SamplerOptions { Kind = SamplerKind.VQDiffusion, Speed = speed };
            bool fast = Skip(speed) > 0;
            int[]? schedule = Schedule(options);
            bool planned = speed >= 1 || (schedule is not null && UnmaskSchedules.TokensBeforeLastStep(schedule) <= NumLatentPixels);
            var request = new GenerationRequest { Prompts = [string.Empty], Sampler = options };
            int calls = planned ? Plan(request, new SamplingStart(null, NumLatentPixels)).Count : 0;
            speeds.Add(new SpeedInfo(speed, fast ? "fast" : speed < 1 ? "high-quality" : "plain", calls, speed < 1 ? PriorPs(NumTimesteps, speed) : 0));
        }

        var schedules = new List<UnmaskScheduleInfo>();
        if (UnmaskSchedules.Default(NumTimesteps, UnmaskSchedules.OriginalGridTokens) is { } wide)
        {
            schedules.Add(new UnmaskScheduleInfo("prior_ps > 10 (speed ≥ 1, or high-quality with more than 10 tokens per call)", wide, UnmaskSchedules.TokensBeforeLastStep(wide) <= NumLatentPixels));
        }

        if (UnmaskSchedules.Default(NumTimesteps, 1) is { } narrow && !narrow.SequenceEqual(schedules.FirstOrDefault()?.Counts ?? []))
        {
            schedules.Add(new UnmaskScheduleInfo("prior_ps <= 10 (high-quality inference with at most 10 tokens per call)", narrow, UnmaskSchedules.TokensBeforeLastStep(narrow) <= NumLatentPixels));
        }

        return new SamplerInfo(
            SamplerKind.VQDiffusion,
            SamplerNames.Name(SamplerKind.VQDiffusion),
            IsDefault: false,
            "the original microsoft/VQ-Diffusion samplers: every timestep T-1 … 0 (speed 1), fast inference (speed ≥ 2: ⌊speed⌋ − 1 timesteps skipped per call), high-quality inference (speed < 1) and the purity prior; exact with the original code.",
            minSpeed,
            NumTimesteps,
            speeds,
            schedules);
    }

    public int[] RowOrder(GenerationRequest request)
    {
        // generate_content's `replicate`: the whole prompt batch repeated, rows [p0, p1, …, p0, p1, …].
        int prompts = request.Prompts.Count;
        int images = request.NumImagesPerPrompt;
        var rows = new int[prompts * images];
        for (int p = 0; p < prompts; p++)
        {
            for (int k = 0; k < images; k++)
            {
                rows[(p * images) + k] = (k * prompts) + p;
            }
        }

        return rows;
    }

    public IReadOnlyList<long> PlannedTimesteps(GenerationRequest request, SamplingStart start) =>
        Plan(request, start).Select(s => s.Timestep).ToList();

    /// <summary>Every planned step: the timestep the network sees, the one the posterior uses, and how the sample is updated.</summary>
    internal List<VQDiffusionSamplerRun.PlannedStep> Plan(GenerationRequest request, SamplingStart start)
    {
        var plan = new List<VQDiffusionSamplerRun.PlannedStep>();
        SamplerOptions options = request.SamplerOrDefault;
        if (start.EditStrength is double strength)
        {
            // DALLE.sample: p_sample (v1) at every t from start_step - 1 down to 0.
            for (long t = SamplingStart.EditStartStep(NumTimesteps, strength) - 1; t >= 0; t--)
            {
                plan.Add(new(t, t, Prior: false));
            }

            return plan;
        }

        int skip = Skip(options.Speed);
        if (skip > 0)
        {
            // sample_fast: range(T - 1, -1, -(skip + 1)), and 0 if the list does not end there.
            for (long t = NumTimesteps - 1; t >= 0; t -= skip + 1)
            {
                plan.Add(new(t, t > skip ? t - skip : t, Prior: false));
            }

            if (plan[^1].Timestep != 0)
            {
                plan.Add(new(0, 0, Prior: false));
            }

            return plan;
        }

        int rule = PriorRule(options);
        int priorPs = PriorPs(NumTimesteps, options.Speed);
        int[]? schedule = Schedule(options);
        for (long t = NumTimesteps - 1; t >= 0; t--)
        {
            int n = schedule?[t] ?? 1;
            if (n == 0)
            {
                continue; // `while min(sampled) < 0` never runs: no network call, no noise.
            }

            bool prior = rule > 0 && t > 0;
            int calls = prior ? PriorCalls(n, priorPs) : 1;
            for (int c = 0; c < calls; c++)
            {
                plan.Add(new(t, t, prior));
            }
        }

        return plan;
    }

    public ISamplerRun Start(GenerationRequest request, SamplingStart start, int[] rowOrder)
    {
        SamplerOptions options = request.SamplerOrDefault;
        bool noised = start.EditStrength is not null;
        float guidance = request.GuidanceScale!.Value;
        bool guided = !noised && Guides(guidance);

        // The batch rows' prompts in the sampler's order; the empty prompt for the unconditional rows.
        int batch = request.BatchSize;
        var rowPrompts = new string[batch];
        for (int i = 0; i < batch; i++)
        {
            rowPrompts[rowOrder[i]] = request.Prompts[i / request.NumImagesPerPrompt];
        }

        Tensor? cond = null;
        Tensor? uncond = null;
        try
        {
            cond = _pipeline.EncodeTexts(rowPrompts);
            if (guided)
            {
                uncond = _pipeline.UsesLearnedNegatives(options.ClassifierFreeEmbeddings)
                    ? _pipeline.LearnedNegatives(batch)
                    : _pipeline.EncodeTexts(Enumerable.Repeat(string.Empty, batch).ToArray());
            }

            var settings = new VQDiffusionSamplerRun.Settings(
                guided ? guidance : null,
                noised ? null : request.TruncationRate,
                PriorRule(options),
                PriorPs(NumTimesteps, options.Speed),
                (float)options.PriorWeight,
                Schedule(options));
            return new VQDiffusionSamplerRun(_pipeline, cond, uncond, Plan(request, start), settings, batch);
        }
        catch
        {
            cond?.Dispose();
            uncond?.Dispose();
            throw;
        }
    }

    private static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
