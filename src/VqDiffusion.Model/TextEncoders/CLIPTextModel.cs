using TorchSharp;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>
/// transformers <c>CLIPTextModel</c> (the text tower of CLIP), as the VQ-Diffusion pipeline uses it: token ids →
/// <c>last_hidden_state</c>. Checkpoint keys are <c>text_model.*</c>.
/// </summary>
public sealed class CLIPTextModel : nn.Module<Tensor, Tensor>
{
    /// <summary>The non-parameter buffer that checkpoints saved by transformers &lt; 4.31 contain.</summary>
    public const string PositionIdsKey = "text_model.embeddings.position_ids";

    private readonly CLIPTextTransformer text_model;

    public CLIPTextModel(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPTextModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config;
        text_model = new CLIPTextTransformer(config, device, dtype);
        RegisterComponents();
        eval();
    }

    public CLIPTextConfig Config { get; }

    /// <summary>Stored keys the model has no place for and that loading should skip (<see cref="PositionIdsKey"/>).</summary>
    public static bool IsIgnoredKey(string key) => key == PositionIdsKey;

    /// <param name="inputIds">int64 <c>[B, L]</c> token ids, L ≤ max_position_embeddings (77).</param>
    /// <returns>last_hidden_state <c>[B, L, hidden_size]</c>.</returns>
    public override Tensor forward(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2 || inputIds.dtype != ScalarType.Int64)
        {
            throw new ArgumentException(
                $"input_ids must be int64 [batch, length]; got {inputIds.dtype} [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        }

        using var noGrad = torch.no_grad();
        return text_model.forward(inputIds);
    }
}
