using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>transformers <c>CLIPEncoderLayer</c>: pre-norm self-attention and MLP, each with a residual connection.</summary>
public sealed class CLIPEncoderLayer : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly CLIPAttention self_attn;
    private readonly LayerNorm layer_norm1;
    private readonly CLIPMLP mlp;
    private readonly LayerNorm layer_norm2;

    public CLIPEncoderLayer(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPEncoderLayer))
    {
        ArgumentNullException.ThrowIfNull(config);
        self_attn = new CLIPAttention(config, device, dtype);
        layer_norm1 = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEps, device: device, dtype: dtype);
        mlp = new CLIPMLP(config, device, dtype);
        layer_norm2 = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor? attentionBias)
    {
        using var scope = NewDisposeScope();
        Tensor h = self_attn.forward(layer_norm1.forward(hiddenStates), attentionBias) + hiddenStates;
        h = mlp.forward(layer_norm2.forward(h)) + h;
        return h.MoveToOuterDisposeScope();
    }
}
