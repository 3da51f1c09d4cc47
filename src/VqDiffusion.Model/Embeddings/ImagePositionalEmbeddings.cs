using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Embeddings;

/// <summary>
/// diffusers <c>ImagePositionalEmbeddings</c>: embeds the latent image classes (VQ codes plus the mask class) and
/// adds learned row (<c>height_emb</c>) and column (<c>width_emb</c>) embeddings (DALL-E, figure 10).
/// Input <c>[B, L]</c> int64 (L ≤ height·width, row-major positions), output <c>[B, L, embed_dim]</c>.
/// </summary>
public sealed class ImagePositionalEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding emb;
    private readonly Embedding height_emb;
    private readonly Embedding width_emb;

    public ImagePositionalEmbeddings(int numEmbed, int height, int width, int embedDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ImagePositionalEmbeddings))
    {
        NumEmbed = numEmbed;
        Height = height;
        Width = width;
        EmbedDim = embedDim;
        emb = nn.Embedding(numEmbed, embedDim, device: device, dtype: dtype);
        height_emb = nn.Embedding(height, embedDim, device: device, dtype: dtype);
        width_emb = nn.Embedding(width, embedDim, device: device, dtype: dtype);
        RegisterComponents();
    }

    public int NumEmbed { get; }

    public int Height { get; }

    public int Width { get; }

    public int EmbedDim { get; }

    public override Tensor forward(Tensor index)
    {
        using var scope = NewDisposeScope();
        Tensor embedded = emb.forward(index);

        using var rows = torch.arange(Height, dtype: ScalarType.Int64, device: index.device).view(1, Height);
        using var cols = torch.arange(Width, dtype: ScalarType.Int64, device: index.device).view(1, Width);

        // 1 x H x D -> 1 x H x 1 x D and 1 x W x D -> 1 x 1 x W x D
        Tensor heightEmb = height_emb.forward(rows).unsqueeze(2);
        Tensor widthEmb = width_emb.forward(cols).unsqueeze(1);

        // 1 x H x W x D -> 1 x L x D
        Tensor posEmb = (heightEmb + widthEmb).view(1, Height * Width, -1);
        long length = embedded.shape[1];
        Tensor result = embedded + posEmb.narrow(1, 0, length);
        return result.MoveToOuterDisposeScope();
    }
}
