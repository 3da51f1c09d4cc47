using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>VectorQuantizer</c> (models/autoencoders/vae.py) as <c>VQModel</c> builds it
/// (<c>beta=0.25, remap=None, sane_index_shape=False, legacy=True</c>), for inference: the codebook
/// <c>embedding</c> [n_e, vq_embed_dim], nearest-code quantization and codebook lookup. The commitment loss is a
/// training quantity and is not computed.
/// </summary>
public sealed class VectorQuantizer : nn.Module
{
    private readonly Embedding embedding;

    public VectorQuantizer(long numEmbeddings, long vqEmbedDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(VectorQuantizer))
    {
        NumEmbeddings = numEmbeddings;
        VqEmbedDim = vqEmbedDim;
        embedding = nn.Embedding(numEmbeddings, vqEmbedDim, device: device, dtype: dtype);
        if (embedding.weight!.device_type != DeviceType.META)
        {
            // diffusers: self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)
            using var noGrad = torch.no_grad();
            embedding.weight.uniform_(-1.0 / numEmbeddings, 1.0 / numEmbeddings);
        }

        RegisterComponents();
    }

    /// <summary>Number of codebook entries (<c>n_e</c>).</summary>
    public long NumEmbeddings { get; }

    /// <summary>Size of a codebook vector (<c>vq_embed_dim</c>).</summary>
    public long VqEmbedDim { get; }

    /// <summary>A copy of the codebook, [n_e, vq_embed_dim]; the caller owns (disposes) it.</summary>
    public Tensor CopyCodebook()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return embedding.weight!.detach().clone().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers <c>get_codebook_entry(indices, shape)</c>: looks the codes up and, when <paramref name="shape"/>
    /// (batch, height, width, channel) is given, returns them as [B, C, H, W]; otherwise [..., C].
    /// </summary>
    /// <param name="indices">int64 code indices, e.g. [B, H*W].</param>
    /// <param name="shape">(B, H, W, vq_embed_dim), or null.</param>
    public Tensor GetCodebookEntry(Tensor indices, long[]? shape)
    {
        using var scope = torch.NewDisposeScope();
        Tensor zq = embedding.call(indices);
        if (shape is not null)
        {
            zq = zq.view(shape).permute(0, 3, 1, 2).contiguous();
        }

        return zq.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers <c>VectorQuantizer.forward</c> for inference: each [B, C, H, W] position is replaced by its nearest
    /// codebook vector (<c>argmin(cdist(z, codebook))</c>). Returns <c>z_q</c> [B, C, H, W], computed like diffusers'
    /// straight-through <c>z + (z_q - z)</c> so the floats match, and the chosen codes as [B, H*W] int64 (diffusers'
    /// flat <c>min_encoding_indices</c> with the batch axis restored; the layout <see cref="GetCodebookEntry"/> takes).
    /// </summary>
    public (Tensor ZQ, Tensor Indices) Quantize(Tensor z)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        Tensor zhwc = z.permute(0, 2, 3, 1).contiguous();
        Tensor flat = zhwc.view(-1, VqEmbedDim);
        Tensor indices = torch.argmin(torch.cdist(flat, embedding.weight!), dim: 1);
        Tensor zq = embedding.call(indices).view(zhwc.shape);
        zq = zhwc + (zq - zhwc);
        zq = zq.permute(0, 3, 1, 2).contiguous();
        Tensor batched = indices.view(z.shape[0], -1);
        return (zq.MoveToOuterDisposeScope(), batched.MoveToOuterDisposeScope());
    }
}
