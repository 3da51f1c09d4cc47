using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>
/// transformers <c>CLIPTextEmbeddings</c>: token embedding plus learned absolute position embedding. The
/// <c>position_ids</c> buffer of older checkpoints is not kept (positions are <c>0..L−1</c>, computed per call).
/// </summary>
public sealed class CLIPTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;

    public CLIPTextEmbeddings(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPTextEmbeddings))
    {
        ArgumentNullException.ThrowIfNull(config);
        MaxPositionEmbeddings = config.MaxPositionEmbeddings;
        token_embedding = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        position_embedding = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public int MaxPositionEmbeddings { get; }

    /// <param name="inputIds">int64 <c>[B, L]</c>, L ≤ max_position_embeddings.</param>
    /// <returns><c>[B, L, hidden]</c>.</returns>
    public override Tensor forward(Tensor inputIds)
    {
        long length = inputIds.shape[^1];
        if (length > MaxPositionEmbeddings)
        {
            throw new ArgumentException(
                $"sequence length {length} exceeds max_position_embeddings {MaxPositionEmbeddings}.", nameof(inputIds));
        }

        using var scope = NewDisposeScope();
        Tensor positionIds = torch.arange(length, dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        Tensor result = token_embedding.forward(inputIds) + position_embedding.forward(positionIds);
        return result.MoveToOuterDisposeScope();
    }
}
