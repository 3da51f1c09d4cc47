using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// Observes a run's intermediate values, for the tests that compare them with the reference code's (network inputs,
/// posteriors, multinomial picks). Tensors are only valid during the call; rows are in the family's order.
/// </summary>
internal interface ISamplingTrace
{
    /// <summary>A transformer forward: its input tokens [B, N], timestep, whether these are the unconditional rows, and the encoder states.</summary>
    void NetworkCall(int step, Tensor tokens, long timestep, bool unconditional, Tensor embeddings);

    /// <summary>A posterior: its inputs and the clamped result, at the timestep it was computed for.</summary>
    void Posterior(int step, long timestep, Tensor logXStart, Tensor xT, Tensor output);

    /// <summary>One multinomial draw of the prior: the image's row, the scores, how many and which positions.</summary>
    void Multinomial(int step, int row, float[] scores, int count, int[] selected);
}
