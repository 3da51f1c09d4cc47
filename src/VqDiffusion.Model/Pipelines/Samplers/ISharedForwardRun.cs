using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// A sampler run whose step is one transformer forward followed by its own math, so several runs can share the
/// forward (<see cref="DenoisingRun.StepTogether"/>: inputs concatenated, one timestep per sample).
/// </summary>
internal interface ISharedForwardRun : ISamplerRun
{
    /// <summary>The next step's timestep.</summary>
    long NextTimestep { get; }

    /// <summary>The transformer input of the next step for <paramref name="sample"/>, <see cref="ISamplerRun.ForwardRows"/> rows.</summary>
    Tensor ForwardInput(Tensor sample);

    /// <summary>The encoder hidden states of those rows.</summary>
    Tensor ForwardEmbeddings { get; }

    /// <summary>The step after the forward: <paramref name="logits"/> are this run's rows of it.</summary>
    SamplerStep Complete(Tensor logits, Tensor sample, Generator generator, bool trackPredictedX0, long forwardStart, long forwardEnd);
}
