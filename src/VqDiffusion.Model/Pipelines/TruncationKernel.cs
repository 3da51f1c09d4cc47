using VqDiffusion.Model.Runtime;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// diffusers' truncation decisions without sorting the classes with their indices. Per latent pixel, diffusers
/// sorts log p(x0) descending, takes the float32 cumulative sum of the probabilities (libtorch accumulates a
/// cumsum in double and rounds each partial sum to float32) and keeps a class while the sum of the classes ranked
/// before it is below the rate. The sequence of sorted probabilities does not depend on how ties are ordered, so
/// sorting the probabilities alone (a 4-pass radix sort of their bit patterns) gives the same partial sums, the
/// rank m where they first reach the rate, and the probability v* there: every class with p &gt; v* is kept,
/// every class with p &lt; v* dropped. Only when several classes share v* and the cut falls among them does the
/// order of ties decide which are kept; such pixels (and any with NaN) go through libtorch's sort, exactly as
/// diffusers computes them.
/// </summary>
internal static class TruncationKernel
{
    private const int Block = 16;

    /// <summary>
    /// Per pixel of <paramref name="probabilities"/> ([B, K, N], float32, contiguous, CPU): the smallest kept
    /// probability (keep p ≥ threshold; −1 keeps all), or NaN where the order of ties decides (use the sort).
    /// </summary>
    public static float[] Thresholds(Tensor probabilities, float rate)
    {
        long batch = probabilities.shape[0];
        int classes = (int)probabilities.shape[1];
        int pixels = (int)probabilities.shape[2];
        var thresholds = new float[batch * pixels];
        int blocksPerImage = (pixels + Block - 1) / Block;
        long blocks = batch * blocksPerImage;
        unsafe
        {
            float* data = CpuKernel.Float32Data(probabilities);
            Parallel.For(0L, blocks, CpuKernel.Parallelism, () => new Scratch(classes), (block, _, scratch) =>
            {
                long b = block / blocksPerImage;
                int n0 = (int)(block % blocksPerImage) * Block;
                int width = Math.Min(Block, pixels - n0);
                float* image = data + (b * classes * pixels);

                // Gather the block's columns (one cache line per class row) into per-pixel arrays.
                for (int k = 0; k < classes; k++)
                {
                    float* row = image + ((long)k * pixels) + n0;
                    for (int j = 0; j < width; j++)
                    {
                        scratch.Columns[j][k] = BitConverter.SingleToUInt32Bits(row[j]);
                    }
                }

                for (int j = 0; j < width; j++)
                {
                    thresholds[(b * pixels) + n0 + j] = Threshold(scratch.Columns[j], scratch.Buffer, rate);
                }

                return scratch;
            }, _ => { });
        }

        return thresholds;
    }

    /// <summary>The threshold of one pixel from the bit patterns of its probabilities (overwritten).</summary>
    private static float Threshold(uint[] bits, uint[] buffer, float rate)
    {
        int n = bits.Length;
        for (int i = 0; i < n; i++)
        {
            // p = exp(log p) is non-negative; a NaN (or a negative) bit pattern goes to the sort.
            if (bits[i] > 0x7F800000u)
            {
                return float.NaN;
            }
        }

        // LSD radix sort, ascending bit patterns = ascending non-negative floats.
        uint[] src = bits;
        uint[] dst = buffer;
        Span<int> counts = stackalloc int[256];
        for (int shift = 0; shift < 32; shift += 8)
        {
            counts.Clear();
            for (int i = 0; i < n; i++)
            {
                counts[(int)((src[i] >> shift) & 0xFF)]++;
            }

            if (counts[(int)((src[0] >> shift) & 0xFF)] == n)
            {
                continue; // every key has this byte: the pass would not move anything
            }

            int sum = 0;
            for (int d = 0; d < 256; d++)
            {
                int c = counts[d];
                counts[d] = sum;
                sum += c;
            }

            for (int i = 0; i < n; i++)
            {
                uint v = src[i];
                dst[counts[(int)((v >> shift) & 0xFF)]++] = v;
            }

            (src, dst) = (dst, src);
        }

        // Descending walk: the cumulative sum as libtorch computes it (double accumulator, float32 values).
        double accumulator = 0;
        for (int rank = 0; rank < n; rank++)
        {
            uint v = src[n - 1 - rank];
            accumulator += BitConverter.UInt32BitsToSingle(v);
            if (!((float)accumulator < rate))
            {
                // Ranks 0..rank are kept, the rest dropped. Does the tie group of v* go on past the cut?
                int last = rank;
                while (last < n - 1 && src[n - 2 - last] == v)
                {
                    last++;
                }

                // All classes with p == v* kept (the cut is after the tie group): keep p >= v*. Otherwise the
                // order of the ties decides.
                return last == rank ? BitConverter.UInt32BitsToSingle(v) : float.NaN;
            }
        }

        return -1f;
    }

    private sealed class Scratch
    {
        public Scratch(int classes)
        {
            Columns = new uint[Block][];
            for (int j = 0; j < Block; j++)
            {
                Columns[j] = new uint[classes];
            }

            Buffer = new uint[classes];
        }

        public uint[][] Columns { get; }

        public uint[] Buffer { get; }
    }
}
