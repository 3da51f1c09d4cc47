namespace VqDiffusion.Model.Pipelines;

/// <summary>One speed of the vq-diffusion sampler.</summary>
/// <param name="Speed">The speed (the original's infer_speed).</param>
/// <param name="Mode"><c>high-quality</c> (below 1), <c>plain</c> (1 to 2) or <c>fast</c> (2 and above).</param>
/// <param name="NetworkCalls">Network evaluations of the batch without a prior; 0 where they depend on an unmask schedule the request must give.</param>
/// <param name="TokensPerCall">High-quality inference: at most this many tokens unmasked per call (prior_ps); 0 otherwise.</param>
public sealed record SpeedInfo(double Speed, string Mode, int NetworkCalls, int TokensPerCall);
