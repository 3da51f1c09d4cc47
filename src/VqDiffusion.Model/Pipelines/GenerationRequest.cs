namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// The arguments of one text-to-image generation, with diffusers' defaults
/// (<c>VQDiffusionPipeline.__call__</c>: 100 steps, guidance 5.0, truncation 1.0, 1 image per prompt).
/// Unset (null) values take the defaults of the request's sampler and mode (<see cref="VQDiffusionPipeline.WithDefaults"/>).
/// </summary>
public sealed record GenerationRequest
{
    public const int DefaultNumInferenceSteps = 100;
    public const float DefaultGuidanceScale = 5.0f;
    public const float DefaultTruncationRate = 1.0f;

    /// <summary>One or more prompts; images come out prompt-major (p0's images, then p1's, ...).</summary>
    public required IReadOnlyList<string> Prompts { get; init; }

    /// <summary>
    /// Denoising steps; the timesteps are <c>n-1 ... 0</c> (1..num_train_timesteps). Null = the default: 100 (at most
    /// T) for diffusers' sampler; T for the vq-diffusion sampler, which always denoises every timestep (its speed sets
    /// the network calls); ⌊T · strength⌋ when editing with a strength.
    /// </summary>
    public int? NumInferenceSteps { get; init; }

    /// <summary>
    /// Classifier-free guidance scale. diffusers' sampler guides when it is greater than 1; the vq-diffusion sampler
    /// unless it is within 1e-3 of 1, as the original. Null = 5.0, or 1 (none) when editing with a strength under the
    /// vq-diffusion sampler (the original's editing has no guidance).
    /// </summary>
    public float? GuidanceScale { get; init; }

    /// <summary>Keep the smallest set of classes whose cumulative probability reaches this rate, in (0, 1].</summary>
    public float TruncationRate { get; init; } = DefaultTruncationRate;

    public int NumImagesPerPrompt { get; init; } = 1;

    /// <summary>
    /// Seed of the request's CPU generator (<c>torch.Generator("cpu").manual_seed(seed)</c>);
    /// null picks a random seed, reported in the result.
    /// </summary>
    public ulong? Seed { get; init; }

    /// <summary>
    /// Optional start tokens, row-major [images, H·W] flattened, each in 0..num_vector_embeds-1
    /// (the last class is the mask). Null starts from all-mask latents.
    /// </summary>
    public IReadOnlyList<long>? InitialLatents { get; init; }

    /// <summary>The sampling family and its options; null = diffusers' sampler.</summary>
    public SamplerOptions? Sampler { get; init; }

    /// <summary>Editing / inpainting of a source; null = text-to-image.</summary>
    public EditOptions? Edit { get; init; }

    public int BatchSize => Prompts.Count * NumImagesPerPrompt;

    /// <summary>The sampler options in effect (<see cref="SamplerOptions.Default"/> when unset).</summary>
    public SamplerOptions SamplerOrDefault => Sampler ?? SamplerOptions.Default;
}
