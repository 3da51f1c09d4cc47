using VqDiffusion.Model.Runtime;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Schedulers;

/// <summary>
/// <c>(noise + logits).argmax(1)</c> in one pass over two float32 CPU tensors [B, K, N] (the noise contiguous, the
/// logits contiguous or class-contiguous, <see cref="PosteriorKernel.Rows"/>), without the
/// summed tensor: each sum is the same IEEE single-precision addition libtorch performs, the first maximum wins
/// ties, and a NaN counts as the maximum (its first occurrence), as libtorch's argmax does.
/// </summary>
internal static class GumbelMaxKernel
{
    /// <summary>The argmax over dim 1, int64 [B, N]; null when the tensors are not contiguous float32 CPU tensors of one shape.</summary>
    public static Tensor? TryArgmax(Tensor noise, Tensor logits)
    {
        if (!CpuKernel.Readable(noise) || noise.dim() != 3 || !noise.shape.SequenceEqual(logits.shape))
        {
            return null;
        }

        if (!CpuKernel.Readable(logits))
        {
            using Tensor? rows = PosteriorKernel.Rows(logits);
            return rows is null ? null : ArgmaxOverRows(noise, rows);
        }

        long batch = noise.shape[0];
        int classes = (int)noise.shape[1];
        int pixels = (int)noise.shape[2];
        var result = new long[batch * pixels];
        const int Chunk = 256;
        int chunks = (pixels + Chunk - 1) / Chunk;
        unsafe
        {
            float* noiseData = CpuKernel.Float32Data(noise);
            float* logitsData = CpuKernel.Float32Data(logits);
            Parallel.For(0L, batch * chunks, CpuKernel.Parallelism, block =>
            {
                long b = block / chunks;
                int n0 = (int)(block % chunks) * Chunk;
                int width = Math.Min(Chunk, pixels - n0);
                Span<float> best = stackalloc float[Chunk];
                Span<int> index = stackalloc int[Chunk];
                best[..width].Fill(float.NegativeInfinity);
                index[..width].Clear();
                float* g = noiseData + (b * classes * pixels) + n0;
                float* x = logitsData + (b * classes * pixels) + n0;
                for (int k = 0; k < classes; k++)
                {
                    float* gk = g + ((long)k * pixels);
                    float* xk = x + ((long)k * pixels);
                    for (int j = 0; j < width; j++)
                    {
                        float v = gk[j] + xk[j];
                        if (v > best[j] || (float.IsNaN(v) && !float.IsNaN(best[j])))
                        {
                            best[j] = v;
                            index[j] = k;
                        }
                    }
                }

                for (int j = 0; j < width; j++)
                {
                    result[(b * pixels) + n0 + j] = index[j];
                }
            });
        }

        return tensor(result, [batch, pixels], ScalarType.Int64);
    }

    /// <summary>The same with the logits stored <c>[B, N, K]</c> (each pixel's classes contiguous).</summary>
    private static Tensor ArgmaxOverRows(Tensor noise, Tensor logitsRows)
    {
        long batch = noise.shape[0];
        int classes = (int)noise.shape[1];
        int pixels = (int)noise.shape[2];
        var result = new long[batch * pixels];
        const int Block = 16;
        int blocks = (pixels + Block - 1) / Block;
        unsafe
        {
            float* noiseData = CpuKernel.Float32Data(noise);
            float* logitsData = CpuKernel.Float32Data(logitsRows);
            Parallel.For(0L, batch * blocks, CpuKernel.Parallelism, block =>
            {
                long b = block / blocks;
                int n0 = (int)(block % blocks) * Block;
                int width = Math.Min(Block, pixels - n0);
                Span<float> best = stackalloc float[Block];
                Span<int> index = stackalloc int[Block];
                best.Fill(float.NegativeInfinity);
                index.Clear();
                float* g = noiseData + (b * classes * pixels) + n0;
                float* x = logitsData + (((b * pixels) + n0) * classes);
                for (int k = 0; k < classes; k++)
                {
                    float* gk = g + ((long)k * pixels);
                    for (int j = 0; j < width; j++)
                    {
                        float v = gk[j] + x[((long)j * classes) + k];
                        if (v > best[j] || (float.IsNaN(v) && !float.IsNaN(best[j])))
                        {
                            best[j] = v;
                            index[j] = k;
                        }
                    }
                }

                for (int j = 0; j < width; j++)
                {
                    result[(b * pixels) + n0 + j] = index[j];
                }
            });
        }

        return tensor(result, [batch, pixels], ScalarType.Int64);
    }
}
