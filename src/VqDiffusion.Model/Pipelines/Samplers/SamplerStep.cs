using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>What one sampler step produced: the next sample, optionally the argmax of its predicted x0, its timestep and timings.</summary>
/// <param name="Next">The new sample, int64 [B, N] in the family's row order (belongs to the caller).</param>
/// <param name="PredictedX0">The most likely x0 of every position, [B, N], when asked for (belongs to the caller).</param>
/// <param name="Timestep">The timestep the network saw.</param>
/// <param name="Phases">Where the step's time went.</param>
internal sealed record SamplerStep(Tensor Next, Tensor? PredictedX0, long Timestep, StepPhases Phases);
