using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// A run's sampler state between steps: its prompt embeddings, the plan of steps and where it is in it. One step
/// updates the sample once (one network evaluation of the batch; conditional and unconditional together when guided).
/// The sample and the generator belong to the <see cref="DenoisingRun"/>.
/// </summary>
internal interface ISamplerRun : IDisposable
{
    /// <summary>The timestep of every planned step, in order; a step the plan did not foresee is appended when it happens.</summary>
    IReadOnlyList<long> Timesteps { get; }

    bool IsDone { get; }

    /// <summary>Rows one of this run's transformer forwards takes.</summary>
    int ForwardRows { get; }

    /// <summary>
    /// The next step on <paramref name="sample"/> (int64 [B, N], the family's row order) with noise from
    /// <paramref name="generator"/>. The returned tensors are new and belong to the caller.
    /// </summary>
    SamplerStep Step(Tensor sample, Generator generator, bool trackPredictedX0, ISamplingTrace? trace);
}
