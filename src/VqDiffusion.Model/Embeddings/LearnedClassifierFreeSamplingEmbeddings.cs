using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Embeddings;

/// <summary>
/// diffusers' <c>LearnedClassifierFreeSamplingEmbeddings</c>: when <c>learnable</c>, the negative
/// ("unconditional") text embeddings used for classifier-free guidance are a learned
/// <c>[length, hidden_size]</c> parameter named <c>embeddings</c>; otherwise the module has no weights
/// and the pipeline encodes the empty prompt instead.
/// </summary>
public sealed class LearnedClassifierFreeSamplingEmbeddings : nn.Module
{
#pragma warning disable IDE0044 // fields are registered as state_dict entries by name
    private Parameter? embeddings;
#pragma warning restore IDE0044

    public LearnedClassifierFreeSamplingEmbeddings(LearnedClassifierFreeSamplingEmbeddingsConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LearnedClassifierFreeSamplingEmbeddings))
    {
        Learnable = config.Learnable ?? throw new ArgumentException("learnable must be set in the config.", nameof(config));
        if (Learnable)
        {
            if (config.HiddenSize is not int hidden || config.Length is not int length || hidden <= 0 || length <= 0)
            {
                throw new ArgumentException("learnable=true requires positive hidden_size and length.", nameof(config));
            }

            embeddings = new Parameter(zeros(new long[] { length, hidden }, dtype: dtype ?? float32, device: device), requires_grad: false);
        }

        RegisterComponents();
    }

    public bool Learnable { get; }

    /// <summary>The learned embeddings [length, hidden_size]; null when not learnable.</summary>
    public Tensor? Embeddings => embeddings;
}
