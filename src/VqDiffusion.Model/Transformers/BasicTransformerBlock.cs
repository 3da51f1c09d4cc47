using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>BasicTransformerBlock</c> for the norm types VQ-Diffusion uses: pre-norm self-attention
/// (<c>norm1</c>, <c>attn1</c>), cross-attention on the text embeddings (<c>norm2</c>, <c>attn2</c>, present when
/// <c>cross_attention_dim</c> is set or <c>double_self_attention</c>), and a feed-forward (<c>norm3</c>, <c>ff</c>),
/// each with a residual connection. With <c>norm_type "ada_norm"</c> norm1/norm2 are <see cref="AdaLayerNorm"/>
/// (timestep-conditioned) and norm3 is a plain LayerNorm; with <c>"layer_norm"</c> all three are LayerNorms.
/// </summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor?, Tensor?, Tensor>
{
    // Field order = diffusers' registration order = the checkpoint's key order.
    private readonly nn.Module norm1;
    private readonly Attention attn1;
    private readonly nn.Module? norm2;
    private readonly Attention? attn2;
    private readonly LayerNorm norm3;
    private readonly FeedForward ff;

    public BasicTransformerBlock(
        int dim,
        int numAttentionHeads,
        int attentionHeadDim,
        double dropout = 0.0,
        int? crossAttentionDim = null,
        string activationFn = "geglu",
        int? numEmbedsAdaNorm = null,
        bool attentionBias = false,
        bool onlyCrossAttention = false,
        bool doubleSelfAttention = false,
        bool upcastAttention = false,
        bool normElementwiseAffine = true,
        string normType = "layer_norm",
        double normEps = 1e-5,
        string attentionType = "default",
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(BasicTransformerBlock))
    {
        if (normType is not ("ada_norm" or "layer_norm"))
        {
            throw new ModelLoadException($"norm_type '{normType}' is not supported (supported: 'ada_norm', 'layer_norm').");
        }

        if (normType == "ada_norm" && numEmbedsAdaNorm is null)
        {
            throw new ModelLoadException("norm_type is 'ada_norm' but num_embeds_ada_norm is not set.");
        }

        if (onlyCrossAttention)
        {
            throw new ModelLoadException("only_cross_attention = true is not supported.");
        }

        if (attentionType != "default")
        {
            throw new ModelLoadException($"attention_type '{attentionType}' is not supported (supported: 'default').");
        }

        UsesAdaLayerNorm = normType == "ada_norm";

        norm1 = UsesAdaLayerNorm
            ? new AdaLayerNorm(dim, numEmbedsAdaNorm!.Value, device, dtype)
            : nn.LayerNorm(dim, eps: normEps, elementwise_affine: normElementwiseAffine, device: device, dtype: dtype);
        attn1 = new Attention(
            dim,
            crossAttentionDim: null,
            heads: numAttentionHeads,
            dimHead: attentionHeadDim,
            dropout: dropout,
            bias: attentionBias,
            upcastAttention: upcastAttention,
            device: device,
            dtype: dtype);

        if (crossAttentionDim is not null || doubleSelfAttention)
        {
            norm2 = UsesAdaLayerNorm
                ? new AdaLayerNorm(dim, numEmbedsAdaNorm!.Value, device, dtype)
                : nn.LayerNorm(dim, eps: normEps, elementwise_affine: normElementwiseAffine, device: device, dtype: dtype);

            // Self-attention when double_self_attention (then the block must be called without encoder states).
            attn2 = new Attention(
                dim,
                crossAttentionDim: doubleSelfAttention ? null : crossAttentionDim,
                heads: numAttentionHeads,
                dimHead: attentionHeadDim,
                dropout: dropout,
                bias: attentionBias,
                upcastAttention: upcastAttention,
                device: device,
                dtype: dtype);
        }

        norm3 = nn.LayerNorm(dim, eps: normEps, elementwise_affine: normElementwiseAffine, device: device, dtype: dtype);
        ff = new FeedForward(dim, dropout: dropout, activationFn: activationFn, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>True when norm1/norm2 are <see cref="AdaLayerNorm"/> (a timestep is required).</summary>
    public bool UsesAdaLayerNorm { get; }

    /// <param name="hiddenStates"><c>[B, N, dim]</c>.</param>
    /// <param name="encoderHiddenStates"><c>[B, M, cross_attention_dim]</c> for the cross-attention (as in diffusers
    /// it is handed to <c>attn2</c> whenever given; <c>attn1</c> never sees it).</param>
    /// <param name="timestep">0-dim int64 timestep for <see cref="AdaLayerNorm"/>; unused with plain LayerNorms.</param>
    public override Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates, Tensor? timestep)
    {
        using var scope = NewDisposeScope();

        // 1. Self-attention
        Tensor normed = Normalize(norm1, hiddenStates, timestep);
        Tensor h = attn1.forward(normed, null) + hiddenStates;

        // 2. Cross-attention
        if (attn2 is not null)
        {
            normed = Normalize(norm2!, h, timestep);
            h = attn2.forward(normed, encoderHiddenStates) + h;
        }

        // 3. Feed-forward
        normed = norm3.forward(h);
        h = ff.forward(normed) + h;
        return h.MoveToOuterDisposeScope();
    }

    private static Tensor Normalize(nn.Module norm, Tensor x, Tensor? timestep) => norm switch
    {
        AdaLayerNorm ada => ada.forward(x, timestep ?? throw new ArgumentNullException(nameof(timestep), "AdaLayerNorm needs a timestep.")),
        LayerNorm layerNorm => layerNorm.forward(x),
        _ => throw new InvalidOperationException($"unexpected norm module {norm.GetType().Name}"),
    };
}
