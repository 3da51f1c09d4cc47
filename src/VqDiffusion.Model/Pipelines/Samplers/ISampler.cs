namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// One sampling family (diffusers' loop, or the original VQ-Diffusion samplers): its defaults, its checks, the order of
/// a request's images in its batch, its plan of steps, and the per-run state that performs them
/// (<see cref="ISamplerRun"/>). A family holds no per-request state; the pipeline owns one of each.
/// </summary>
internal interface ISampler
{
    SamplerKind Kind { get; }

    /// <summary>The request with its unset values (steps, guidance) set to this family's defaults.</summary>
    GenerationRequest WithDefaults(GenerationRequest request);

    /// <summary>
    /// Checks <see cref="GenerationRequest.NumInferenceSteps"/> (after <see cref="WithDefaults"/>; an edit's strength is
    /// valid already). Throws a <see cref="GenerationArgumentException"/> naming the field.
    /// </summary>
    void ValidateSteps(GenerationRequest request);

    /// <summary>
    /// Checks the rest of what only this family decides (guidance, truncation, its options); the common fields are
    /// valid already. Throws a <see cref="GenerationArgumentException"/> naming the field.
    /// </summary>
    void Validate(GenerationRequest request, SamplingStart start);

    /// <summary>
    /// The batch row of every image in prompt-major order (<c>index = prompt · images_per_prompt + k</c>): noise is
    /// drawn over the rows in this order, so it must be the reference implementation's.
    /// </summary>
    int[] RowOrder(GenerationRequest request);

    /// <summary>The timestep of every step a validated request will take (progress counts these).</summary>
    IReadOnlyList<long> PlannedTimesteps(GenerationRequest request, SamplingStart start);

    /// <summary>What the family offers on this model (for <c>GetModelInfo</c>).</summary>
    SamplerInfo Describe();

    /// <summary>Encodes the prompts and returns the run's sampler state; the caller owns (disposes) it.</summary>
    ISamplerRun Start(GenerationRequest request, SamplingStart start, int[] rowOrder);
}
