using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>Attention</c> as the VQ-VAE blocks build it (<c>_from_deprecated_attn_block=True</c>): spatial
/// self-attention over the H*W positions of a [B, C, H, W] map, with <c>group_norm</c> (or a
/// <see cref="SpatialNorm"/> for <c>norm_type = "spatial"</c>) before the projections, biased
/// <c>to_q</c>/<c>to_k</c>/<c>to_v</c>, <c>to_out</c> = [Linear, Dropout], softmax in float32
/// (<c>upcast_softmax</c>), a residual connection and division by <c>rescale_output_factor</c>.
/// The computation follows diffusers' <c>AttnProcessor</c> (scores = dim_head^-0.5 * q k^T, softmax, bmm),
/// which is the processor the golden reference ran (torch 1.13); <c>AttnProcessor2_0</c> is the same math.
/// Checkpoints written with the old names (<c>query</c>, <c>key</c>, <c>value</c>, <c>proj_attn</c>) load through
/// <see cref="VQModel.RenameDeprecatedKey"/>.
/// </summary>
public sealed class AutoencoderAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    // Field order = diffusers' state_dict order.
    private readonly GroupNorm? group_norm;
    private readonly SpatialNorm? spatial_norm;
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;

    private readonly long _heads;
    private readonly float _scale;
    private readonly double _rescaleOutputFactor;
    private readonly bool _residualConnection;

    /// <param name="queryDim">Channels of the feature map.</param>
    /// <param name="heads">Number of heads (the VQ-VAE uses 1: <c>channels / attention_head_dim</c> with head dim = channels).</param>
    /// <param name="dimHead">Channels per head.</param>
    /// <param name="rescaleOutputFactor">The output (after the residual) is divided by this.</param>
    /// <param name="eps">GroupNorm epsilon.</param>
    /// <param name="normNumGroups">GroupNorm groups; null for no <c>group_norm</c>.</param>
    /// <param name="spatialNormDim">Quantized-latent channels of a <c>spatial_norm</c>; null for none.</param>
    /// <param name="residualConnection">Whether the input is added to the output.</param>
    /// <param name="bias">Bias of the q/k/v projections.</param>
    /// <param name="dropout">Dropout of <c>to_out.1</c> (inference: unused).</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public AutoencoderAttention(
        long queryDim,
        long heads = 1,
        long? dimHead = null,
        double rescaleOutputFactor = 1.0,
        double eps = 1e-6,
        long? normNumGroups = null,
        long? spatialNormDim = null,
        bool residualConnection = true,
        bool bias = true,
        double dropout = 0.0,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(AutoencoderAttention))
    {
        long headDim = dimHead ?? queryDim / heads;
        long inner = headDim * heads;
        _heads = heads;
        _scale = (float)Math.Pow(headDim, -0.5);
        _rescaleOutputFactor = rescaleOutputFactor;
        _residualConnection = residualConnection;

        if (normNumGroups is long groups)
        {
            group_norm = AutoencoderLayers.GroupNorm(groups, queryDim, eps, device, dtype);
        }

        if (spatialNormDim is long zq)
        {
            spatial_norm = new SpatialNorm(queryDim, zq, device, dtype);
        }

        to_q = nn.Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_k = nn.Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_v = nn.Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(
            nn.Linear(inner, queryDim, hasBias: true, device: device, dtype: dtype),
            nn.Dropout(dropout));
        RegisterComponents();
    }

    /// <param name="hiddenStates">[B, C, H, W].</param>
    /// <param name="temb">The quantized latents for a <c>spatial_norm</c>; otherwise unused (may be null).</param>
    public override Tensor forward(Tensor hiddenStates, Tensor? temb)
    {
        using var scope = torch.NewDisposeScope();
        Tensor residual = hiddenStates;
        Tensor h = hiddenStates;
        if (spatial_norm is not null)
        {
            h = spatial_norm.call(h, temb ?? throw new ArgumentException("attention with spatial_norm needs the quantized latents (temb).", nameof(temb)));
        }

        long batch = h.shape[0], channels = h.shape[1], height = h.shape[2], width = h.shape[3];
        long seq = height * width;
        h = h.view(batch, channels, seq).transpose(1, 2);

        if (group_norm is not null)
        {
            h = group_norm.call(h.transpose(1, 2)).transpose(1, 2);
        }

        Tensor query = HeadToBatchDim(to_q.call(h));
        Tensor key = HeadToBatchDim(to_k.call(h));
        Tensor value = HeadToBatchDim(to_v.call(h));

        // get_attention_scores: baddbmm(empty, q, k^T, beta=0, alpha=scale) = scale * (q @ k^T); upcast_softmax:
        // softmax in float32. (TorchSharp 0.107's baddbmm hands its arguments to libtorch in the wrong order, so the
        // product is taken with bmm and scaled.)
        ScalarType dtype = query.dtype;
        Tensor scores = torch.bmm(query, key.transpose(-1, -2)).mul_(_scale);
        Tensor probs = scores.to(ScalarType.Float32).softmax(-1).to(dtype);

        Tensor attended = BatchToHeadDim(torch.bmm(probs, value));
        foreach (var layer in to_out)
        {
            attended = layer.call(attended);
        }

        Tensor output = attended.transpose(-1, -2).reshape(batch, channels, height, width);
        if (_residualConnection)
        {
            output = output + residual;
        }

        if (_rescaleOutputFactor != 1.0)
        {
            output = output / _rescaleOutputFactor;
        }

        return output.MoveToOuterDisposeScope();
    }

    /// <summary>[B, S, heads*d] → [B*heads, S, d].</summary>
    private Tensor HeadToBatchDim(Tensor t)
    {
        long b = t.shape[0], s = t.shape[1], dim = t.shape[2];
        return t.reshape(b, s, _heads, dim / _heads).permute(0, 2, 1, 3).reshape(b * _heads, s, dim / _heads);
    }

    /// <summary>[B*heads, S, d] → [B, S, heads*d].</summary>
    private Tensor BatchToHeadDim(Tensor t)
    {
        long bh = t.shape[0], s = t.shape[1], dim = t.shape[2];
        return t.reshape(bh / _heads, _heads, s, dim).permute(0, 2, 1, 3).reshape(bh / _heads, s, dim * _heads);
    }
}
