namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// What the pipeline reports after each denoising step. Token and preview accessors read the run's
/// current state and are only valid during the callback that received this object.
/// </summary>
public sealed class StepContext
{
    private readonly DenoisingRun _run;

    internal StepContext(DenoisingRun run, int completedSteps, long timestep, StepPhases phases)
    {
        _run = run;
        Phases = phases;
        CompletedSteps = completedSteps;
        Timestep = timestep;
    }

    /// <summary>Steps done so far (1 after the first step).</summary>
    public int CompletedSteps { get; }

    public int TotalSteps => _run.TotalSteps;

    /// <summary>The timestep just denoised (<c>n-1</c> at the first step, 0 at the last).</summary>
    public long Timestep { get; }

    /// <summary>Where the step's time went.</summary>
    public StepPhases Phases { get; }

    public int BatchSize => _run.BatchSize;

    public int LatentHeight => _run.LatentHeight;

    public int LatentWidth => _run.LatentWidth;

    public int MaskClass => _run.MaskClass;

    /// <summary>The current sample of every image, [images, H·W] flattened row-major.</summary>
    public long[] Tokens() => _run.Tokens();

    /// <summary>
    /// A preview of one image: masked tokens replaced by the argmax of this step's predicted x0,
    /// decoded by the VQ decoder. 8-bit RGB, H × W × 3.
    /// </summary>
    public GeneratedImage Preview(int imageIndex) => _run.Preview(imageIndex);
}

/// <summary>
/// The wall time of one denoising step by phase: the transformer's blocks and output projection (its matrix
/// products), the float64 log-softmax (with the guidance mix, where the CPU kernel applies it on the way out),
/// classifier-free guidance (the renormalisation; also the mix elsewhere), truncation with the clamp, and the
/// scheduler step (q_posterior, Gumbel noise, argmax) with the preview's x0 argmax.
/// </summary>
public readonly record struct StepPhases(TimeSpan Transformer, TimeSpan LogSoftmax, TimeSpan Guidance, TimeSpan Truncation, TimeSpan Posterior)
{
    public TimeSpan Total => Transformer + LogSoftmax + Guidance + Truncation + Posterior;

    /// <summary>Everything but the transformer's matrix products.</summary>
    public TimeSpan NonTransformer => LogSoftmax + Guidance + Truncation + Posterior;
}
