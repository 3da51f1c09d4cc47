using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// Inpainting's constraint: outside the mask every token is the source's after every step. Rows are in the sampler's
/// order.
/// </summary>
internal sealed class InpaintingMask : IDisposable
{
    /// <param name="source">The source tokens, int64 [B, N].</param>
    /// <param name="regenerate">True where tokens are generated, bool [1, N] (every image) or [B, N].</param>
    public InpaintingMask(Tensor source, Tensor regenerate)
    {
        Source = source;
        Regenerate = regenerate;
    }

    public Tensor Source { get; }

    public Tensor Regenerate { get; }

    /// <summary>The tokens with the source put back outside the mask (a new tensor).</summary>
    public Tensor Apply(Tensor tokens) => where(Regenerate, tokens, Source);

    public void Dispose()
    {
        Source.Dispose();
        Regenerate.Dispose();
    }
}
