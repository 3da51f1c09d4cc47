using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>Attention</c> as <c>BasicTransformerBlock</c> builds it (no group/cross norm, no added K/V, no
/// residual, <c>scale_qk</c> on): <c>to_q</c>, <c>to_k</c>, <c>to_v</c> (bias = <c>attention_bias</c>),
/// <c>to_out = [Linear(bias=True), Dropout]</c>, multi-head scaled dot-product attention with scale
/// <c>dim_head^-0.5</c>. Self-attention when no encoder hidden states are given, cross-attention otherwise.
/// </summary>
public sealed class Attention : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;

    public Attention(
        int queryDim,
        int? crossAttentionDim = null,
        int heads = 8,
        int dimHead = 64,
        double dropout = 0.0,
        bool bias = false,
        bool upcastAttention = false,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(Attention))
    {
        Heads = heads;
        DimHead = dimHead;
        InnerDim = heads * dimHead;
        CrossAttentionDim = crossAttentionDim ?? queryDim;
        UpcastAttention = upcastAttention;
        Scale = Math.Pow(dimHead, -0.5);

        to_q = nn.Linear(queryDim, InnerDim, hasBias: bias, device: device, dtype: dtype);
        to_k = nn.Linear(CrossAttentionDim, InnerDim, hasBias: bias, device: device, dtype: dtype);
        to_v = nn.Linear(CrossAttentionDim, InnerDim, hasBias: bias, device: device, dtype: dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(
            nn.Linear(InnerDim, queryDim, hasBias: true, device: device, dtype: dtype),
            nn.Dropout(dropout));
        RegisterComponents();
    }

    public int Heads { get; }

    public int DimHead { get; }

    public int InnerDim { get; }

    /// <summary>Width of the key/value input (<c>query_dim</c> for self-attention).</summary>
    public int CrossAttentionDim { get; }

    /// <summary>Compute the attention scores and softmax in float32 when the model runs in a lower precision.</summary>
    public bool UpcastAttention { get; }

    public double Scale { get; }

    /// <param name="hiddenStates"><c>[B, N, query_dim]</c>.</param>
    /// <param name="encoderHiddenStates"><c>[B, M, cross_attention_dim]</c>, or null for self-attention.</param>
    /// <returns><c>[B, N, query_dim]</c>.</returns>
    public override Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        Tensor context = encoderHiddenStates ?? hiddenStates;
        long batch = hiddenStates.shape[0];

        // [B, N, heads·d] -> [B, heads, N, d]
        Tensor query = SplitHeads(to_q.forward(hiddenStates), batch);
        Tensor key = SplitHeads(to_k.forward(context), batch);
        Tensor value = SplitHeads(to_v.forward(context), batch);

        Tensor attended;
        if (UpcastAttention && query.dtype != ScalarType.Float32)
        {
            // diffusers' get_attention_scores: q and k in float32, probabilities back to the value dtype.
            Tensor scores = torch.matmul(query.to(ScalarType.Float32), key.to(ScalarType.Float32).transpose(-1, -2)) * Scale;
            Tensor probs = scores.softmax(-1).to(value.dtype);
            attended = torch.matmul(probs, value);
        }
        else
        {
            // Default scale of scaled_dot_product_attention is 1/sqrt(d) = dim_head^-0.5.
            attended = nn.functional.scaled_dot_product_attention(query, key, value);
        }

        // [B, heads, N, d] -> [B, N, heads·d]
        Tensor merged = attended.transpose(1, 2).reshape(batch, -1, InnerDim);
        Tensor output = merged;
        foreach (var module in to_out)
        {
            output = module.forward(output);
        }

        return output.MoveToOuterDisposeScope();
    }

    private Tensor SplitHeads(Tensor projected, long batch) =>
        projected.view(batch, -1, Heads, DimHead).transpose(1, 2);
}
