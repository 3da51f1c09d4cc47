namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// diffusers' <c>VQDiffusionPipeline</c> sampling (the default family): timesteps n−1 … 0, one transformer forward of
/// the unconditional and text rows per step, guidance when the scale is above 1, truncation, then
/// <see cref="Schedulers.VQDiffusionScheduler.Step"/>. An edit with a strength starts from one <c>q_sample</c> of the
/// source at t = ⌊T · strength⌋ − 1 (this project's extension; diffusers has no editing) and takes diffusers' steps from there.
/// </summary>
internal sealed class DiffusersSampler : ISampler
{
    private readonly VQDiffusionPipeline _pipeline;

    public DiffusersSampler(VQDiffusionPipeline pipeline) => _pipeline = pipeline;

    public SamplerKind Kind => SamplerKind.Diffusers;

    private int NumTrainTimesteps => _pipeline.scheduler.NumTrainTimesteps;

    public GenerationRequest WithDefaults(GenerationRequest request) => request with
    {
        NumInferenceSteps = request.NumInferenceSteps ?? (request.Edit?.Strength is double s
            ? SamplingStart.EditStartStep(NumTrainTimesteps, s)
            : Math.Min(GenerationRequest.DefaultNumInferenceSteps, NumTrainTimesteps)),
        GuidanceScale = request.GuidanceScale ?? GenerationRequest.DefaultGuidanceScale,
    };

    public void Validate(GenerationRequest request, SamplingStart start)
    {
        SamplerOptions options = request.SamplerOrDefault;
        const string Only = "is an option of the vq-diffusion sampler (sampler.kind = vq-diffusion)";
        if (options.Speed != SamplerOptions.DefaultSpeed)
        {
            throw new GenerationArgumentException("sampler.speed", $"sampler.speed {Only}; diffusers' sampler takes num_inference_steps.");
        }

        if (options.Prior != UnmaskPrior.None)
        {
            throw new GenerationArgumentException("sampler.prior", $"sampler.prior {Only}.");
        }

        if (options.PriorWeight != 0)
        {
            throw new GenerationArgumentException("sampler.prior_weight", $"sampler.prior_weight {Only}.");
        }

        if (options.UnmaskSchedule is not null)
        {
            throw new GenerationArgumentException("sampler.unmask_schedule", $"sampler.unmask_schedule {Only}.");
        }

    }

    public void ValidateSteps(GenerationRequest request)
    {
        int steps = request.NumInferenceSteps!.Value;
        if (request.Edit?.Strength is double strength)
        {
            int startStep = SamplingStart.EditStartStep(NumTrainTimesteps, strength);
            if (steps != startStep)
            {
                throw new GenerationArgumentException("num_inference_steps",
                    $"num_inference_steps must be {startStep} (or unset) when editing with strength {strength}: the steps are the timesteps {startStep - 1} … 0, got {steps}.");
            }
        }
        else if (steps < 1 || steps > NumTrainTimesteps)
        {
            throw new GenerationArgumentException("num_inference_steps", $"num_inference_steps must be between 1 and {NumTrainTimesteps}, got {steps}.");
        }
    }

    public int[] RowOrder(GenerationRequest request) => Enumerable.Range(0, request.BatchSize).ToArray();

    public SamplerInfo Describe() => new(
        SamplerKind.Diffusers,
        SamplerNames.Name(SamplerKind.Diffusers),
        IsDefault: true,
        "diffusers' VQDiffusionPipeline: timesteps num_inference_steps-1 … 0, one network call each; exact with diffusers.",
        MinSpeed: SamplerOptions.DefaultSpeed,
        MaxSpeed: SamplerOptions.DefaultSpeed,
        Speeds: [],
        DefaultUnmaskSchedules: []);

    public IReadOnlyList<long> PlannedTimesteps(GenerationRequest request, SamplingStart start) =>
        _pipeline.scheduler.Timesteps(request.NumInferenceSteps!.Value);

    public ISamplerRun Start(GenerationRequest request, SamplingStart start, int[] rowOrder)
    {
        float guidance = request.GuidanceScale!.Value;
        var embeds = _pipeline.EncodePrompt(request.Prompts, request.NumImagesPerPrompt, guidance > 1.0f, request.SamplerOrDefault.ClassifierFreeEmbeddings);
        return new DiffusersSamplerRun(_pipeline, embeds, _pipeline.scheduler.Timesteps(request.NumInferenceSteps!.Value), guidance, request.TruncationRate, request.BatchSize);
    }
}
