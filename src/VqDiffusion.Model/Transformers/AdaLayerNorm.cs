using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>AdaLayerNorm</c>: a LayerNorm without affine parameters whose scale and shift come from a learned
/// timestep embedding: <c>emb = linear(silu(emb(t)))</c>, <c>scale, shift = chunk(emb, 2)</c>,
/// <c>norm(x)·(1 + scale) + shift</c>.
/// </summary>
/// <remarks>
/// As in diffusers the chunk is taken along dim 0. With the 0-dim timestep VQ-Diffusion passes, <c>emb</c> is
/// <c>[2·dim]</c>, so scale and shift are <c>[dim]</c> vectors shared by the whole batch. (A 1-D timestep of
/// batch size B would be split along the batch dimension, exactly as diffusers would do it.)
/// </remarks>
public sealed class AdaLayerNorm : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Embedding emb;
    private readonly Linear linear;
    private readonly LayerNorm norm;

    public AdaLayerNorm(int embeddingDim, int numEmbeddings, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AdaLayerNorm))
    {
        EmbeddingDim = embeddingDim;
        NumEmbeddings = numEmbeddings;
        emb = nn.Embedding(numEmbeddings, embeddingDim, device: device, dtype: dtype);
        linear = nn.Linear(embeddingDim, embeddingDim * 2, hasBias: true, device: device, dtype: dtype);
        norm = nn.LayerNorm(embeddingDim, eps: 1e-5, elementwise_affine: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public int EmbeddingDim { get; }

    public int NumEmbeddings { get; }

    /// <param name="x"><c>[B, N, dim]</c>.</param>
    /// <param name="timestep">A 0-dim timestep for the whole batch (as VQ-Diffusion passes it), or <c>[B, 1]</c>: one
    /// timestep per sample (this project's extension, for running several requests in one forward).</param>
    public override Tensor forward(Tensor x, Tensor timestep)
    {
        using var scope = NewDisposeScope();
        if (timestep.dim() == 2)
        {
            Tensor perSample = linear.forward(nn.functional.silu(emb.forward(timestep.squeeze(1))));
            Tensor[] halves = perSample.chunk(2, 1);
            Tensor scaled = norm.forward(x) * (halves[0].unsqueeze(1) + 1) + halves[1].unsqueeze(1);
            return scaled.MoveToOuterDisposeScope();
        }

        Tensor embedded = linear.forward(nn.functional.silu(emb.forward(timestep)));
        Tensor[] chunks = embedded.chunk(2, 0);
        Tensor scale = chunks[0];
        Tensor shift = chunks[1];
        Tensor result = norm.forward(x) * (scale + 1) + shift;
        return result.MoveToOuterDisposeScope();
    }
}
