using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>
/// transformers <c>CLIPAttention</c> (eager): multi-head self-attention with <c>k_proj</c>, <c>v_proj</c>,
/// <c>q_proj</c>, <c>out_proj</c>; the query is scaled by <c>head_dim^-0.5</c> before the product, the additive
/// mask (the causal mask, <c>finfo(dtype).min</c> above the diagonal) is added to the scores, softmax over the keys.
/// </summary>
public sealed class CLIPAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly Linear k_proj;
    private readonly Linear v_proj;
    private readonly Linear q_proj;
    private readonly Linear out_proj;

    public CLIPAttention(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPAttention))
    {
        ArgumentNullException.ThrowIfNull(config);
        EmbedDim = config.HiddenSize;
        NumHeads = config.NumAttentionHeads;
        if (NumHeads <= 0 || EmbedDim % NumHeads != 0)
        {
            throw new ModelLoadException(
                $"text encoder config: hidden_size ({EmbedDim}) must be divisible by num_attention_heads ({NumHeads}).");
        }

        HeadDim = EmbedDim / NumHeads;
        Scale = Math.Pow(HeadDim, -0.5);
        k_proj = nn.Linear(EmbedDim, EmbedDim, hasBias: true, device: device, dtype: dtype);
        v_proj = nn.Linear(EmbedDim, EmbedDim, hasBias: true, device: device, dtype: dtype);
        q_proj = nn.Linear(EmbedDim, EmbedDim, hasBias: true, device: device, dtype: dtype);
        out_proj = nn.Linear(EmbedDim, EmbedDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    public int EmbedDim { get; }

    public int NumHeads { get; }

    public int HeadDim { get; }

    public double Scale { get; }

    /// <param name="hiddenStates"><c>[B, L, hidden]</c>.</param>
    /// <param name="attentionBias">Additive mask broadcastable to <c>[B, heads, L, L]</c> (e.g. the causal mask), or null.</param>
    public override Tensor forward(Tensor hiddenStates, Tensor? attentionBias)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0];
        long length = hiddenStates.shape[1];

        Tensor query = SplitHeads(q_proj.forward(hiddenStates) * Scale, batch);
        Tensor key = SplitHeads(k_proj.forward(hiddenStates), batch);
        Tensor value = SplitHeads(v_proj.forward(hiddenStates), batch);

        Tensor scores = torch.matmul(query, key.transpose(-1, -2));
        if (attentionBias is not null)
        {
            scores = scores + attentionBias;
        }

        // Softmax in float32 (a no-op for float32 models; keeps half-precision runs stable).
        Tensor probs = scores.softmax(-1, ScalarType.Float32).to(value.dtype);
        Tensor attended = torch.matmul(probs, value).transpose(1, 2).reshape(batch, length, EmbedDim);
        return out_proj.forward(attended).MoveToOuterDisposeScope();
    }

    private Tensor SplitHeads(Tensor projected, long batch) =>
        projected.view(batch, -1, NumHeads, HeadDim).transpose(1, 2);
}
