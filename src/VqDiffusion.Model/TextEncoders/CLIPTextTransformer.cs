using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>
/// transformers <c>CLIPTextTransformer</c>: embeddings → encoder with a causal attention mask (no padding mask:
/// the VQ-Diffusion pipeline passes none) → <c>final_layer_norm</c>. Returns the last hidden state.
/// </summary>
public sealed class CLIPTextTransformer : nn.Module<Tensor, Tensor>
{
    private readonly CLIPTextEmbeddings embeddings;
    private readonly CLIPEncoder encoder;
    private readonly LayerNorm final_layer_norm;

    public CLIPTextTransformer(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPTextTransformer))
    {
        ArgumentNullException.ThrowIfNull(config);
        embeddings = new CLIPTextEmbeddings(config, device, dtype);
        encoder = new CLIPEncoder(config, device, dtype);
        final_layer_norm = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="inputIds">int64 <c>[B, L]</c>.</param>
    /// <returns>last_hidden_state <c>[B, L, hidden]</c>.</returns>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        Tensor hiddenStates = embeddings.forward(inputIds);
        Tensor causalMask = CausalMask(inputIds.shape[^1], hiddenStates.dtype, hiddenStates.device);
        Tensor last = encoder.forward(hiddenStates, causalMask);
        return final_layer_norm.forward(last).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// transformers' <c>_create_4d_causal_attention_mask</c>: <c>[1, 1, L, L]</c>, 0 on and below the diagonal,
    /// <c>finfo(dtype).min</c> above it (position i attends to positions ≤ i).
    /// </summary>
    public static Tensor CausalMask(long length, ScalarType dtype, Device device)
    {
        using var full = torch.full(length, length, torch.finfo(dtype).min, dtype: dtype, device: device);
        return full.triu(1).view(1, 1, length, length);
    }
}
