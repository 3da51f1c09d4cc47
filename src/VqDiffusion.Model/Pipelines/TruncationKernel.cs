using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using VqDiffusion.Model.Runtime;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// diffusers' truncation decisions without sorting the classes with their indices. Per latent pixel, diffusers
/// sorts log p(x0) descending, takes the float32 cumulative sum of the probabilities (libtorch accumulates a
/// cumsum in double and rounds each partial sum to float32) and keeps a class while the sum of the classes ranked
/// before it is below the rate. The sequence of sorted probabilities does not depend on how ties are ordered, so
/// the partial sums, the rank m where they first reach the rate, and the probability v* there follow from the
/// probabilities alone: every class with p &gt; v* is kept, every class with p &lt; v* dropped. Only when several
/// classes share v* and the cut falls among them does the order of ties decide which are kept; such pixels (and
/// any with NaN) go through libtorch's sort, exactly as diffusers computes them.
/// </summary>
/// <remarks>
/// Finding the cut needs the sorted order only near it. <see cref="Threshold"/> buckets a pixel's probabilities by
/// the top bits of their bit patterns (exponent and leading mantissa bits: the bucket order is the value order),
/// adds whole buckets while even the largest possible partial sum in them stays below the rate, and sorts only the
/// bucket where the cut can fall, refining it by the next bits while it is large. The partial sums come out in
/// another order than libtorch's sequential double accumulation, so each decision is taken only when it holds for
/// every value within a bound of that difference (two double sums of the same n non-negative terms differ by at
/// most 2·n·2⁻⁵³ of their total); where one does not, the pixel is replayed exactly (<see cref="ExactThreshold"/>:
/// a full radix sort and libtorch's accumulation, rank by rank).
/// </remarks>
internal static class TruncationKernel
{
    /// <summary>The first level buckets by bits 31..20 (sign, exponent, three mantissa bits).</summary>
    private const int TopShift = 20;

    /// <summary>A candidate set at most this large is sorted instead of refined by the next bits.</summary>
    private const int SortLimit = 48;

    private enum Outcome
    {
        /// <summary>Every partial sum in the set stays below the rate; the accumulator now includes the set.</summary>
        Below,

        /// <summary>The cut is at <see cref="Walk.Cut"/>.</summary>
        Cut,

        /// <summary>Several tied classes straddle the cut: their order decides.</summary>
        TiesDecide,

        /// <summary>A partial sum is too close to the rate to decide without the exact order.</summary>
        TooClose,
    }

    private static long s_exactReplays;

    /// <summary>Pixels replayed exactly because a partial sum fell too close to the rate (since the process started; for the tests).</summary>
    internal static long ExactReplays => Interlocked.Read(ref s_exactReplays);

    /// <summary>
    /// Per pixel of <paramref name="probabilities"/> (<c>[B, N, K]</c>: each pixel's classes contiguous, float32,
    /// CPU): the smallest kept probability (keep p ≥ threshold; −1 keeps all), or NaN where the order of ties
    /// decides (use the sort).
    /// </summary>
    public static float[] Thresholds(Tensor probabilities, float rate) => Thresholds(probabilities, rate, exact: false);

    /// <summary><see cref="Thresholds(Tensor, float)"/> with every pixel replayed by the full sort (for the tests).</summary>
    internal static float[] Thresholds(Tensor probabilities, float rate, bool exact)
    {
        if (probabilities.dim() != 3 || !CpuKernel.Readable(probabilities))
        {
            throw new ArgumentException("probabilities must be a contiguous float32 CPU tensor [B, N, K].", nameof(probabilities));
        }

        long rows = probabilities.shape[0] * probabilities.shape[1];
        int classes = (int)probabilities.shape[2];
        var thresholds = new float[rows];
        const int RowsPerJob = 16;
        unsafe
        {
            uint* data = (uint*)CpuKernel.Float32Data(probabilities);
            Parallel.For(0L, (rows + RowsPerJob - 1) / RowsPerJob, CpuKernel.Parallelism, job =>
            {
                Scratch scratch = Scratch.ForThread(classes);
                for (long row = job * RowsPerJob; row < Math.Min(rows, (job + 1) * RowsPerJob); row++)
                {
                    var bits = new ReadOnlySpan<uint>(data + (row * classes), classes);
                    thresholds[row] = exact ? ExactThreshold(bits, scratch, rate) : Threshold(bits, scratch, rate);
                }
            });
        }

        return thresholds;
    }

    /// <summary>
    /// The truncated log-probabilities, <c>[B, N, K]</c> like the inputs: <c>−inf</c> where <c>p &lt; threshold</c>
    /// (libtorch's <c>masked_fill(p.lt(threshold), −inf)</c>), then <c>clamp(min)</c> when <paramref name="clampMin"/>
    /// is set (NaN stays NaN, as in libtorch). Pixels with a NaN threshold are copied (clamped) for the caller to
    /// replace.
    /// </summary>
    public static Tensor Apply(Tensor logPx0Rows, Tensor probabilities, float[] thresholds, float? clampMin)
    {
        long rows = logPx0Rows.shape[0] * logPx0Rows.shape[1];
        int classes = (int)logPx0Rows.shape[2];
        Tensor result = empty_like(logPx0Rows);
        bool clamp = clampMin is not null;
        float min = clampMin ?? float.NegativeInfinity;
        unsafe
        {
            float* x = CpuKernel.Float32Data(logPx0Rows);
            float* p = CpuKernel.Float32Data(probabilities);
            float* target = CpuKernel.Float32Data(result);
            Parallel.For(0L, rows, CpuKernel.Parallelism, row =>
            {
                long offset = row * classes;
                float threshold = thresholds[row];
                int k = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    Vector256<float> t = Vector256.Create(threshold);
                    Vector256<float> minimum = Vector256.Create(min);
                    Vector256<float> dropped = Vector256.Create(float.NegativeInfinity);
                    for (; k + 8 <= classes; k += 8)
                    {
                        Vector256<float> v = Vector256.ConditionalSelect(Vector256.LessThan(Vector256.Load(p + offset + k), t), dropped, Vector256.Load(x + offset + k));
                        if (clamp)
                        {
                            v = Vector256.ConditionalSelect(Vector256.LessThan(v, minimum), minimum, v);
                        }

                        v.Store(target + offset + k);
                    }
                }

                for (; k < classes; k++)
                {
                    float v = p[offset + k] < threshold ? float.NegativeInfinity : x[offset + k];
                    target[offset + k] = clamp && v < min ? min : v;
                }
            });
        }

        return result;
    }

    /// <summary>
    /// The threshold of one pixel from the bit patterns of its probabilities (left unchanged, unless the pixel is
    /// replayed exactly, which sorts them).
    /// </summary>
    private static float Threshold(ReadOnlySpan<uint> bits, Scratch scratch, float rate)
    {
        int n = bits.Length;
        if (!Total(bits, out double total))
        {
            // NaN, a negative value or +inf: decided by the exact replay (NaN and negatives go to the sort).
            return ExactThreshold(bits, scratch, rate);
        }

        // Two double sums of the same n non-negative terms in any orders differ by at most 2·(n − 1)·2⁻⁵³ of the total.
        double slack = (((2.0 * n) + 4) * 1.12e-16 * total) + 1e-300;
        if ((float)(total + slack) < rate)
        {
            return -1f; // every partial sum stays below the rate: all kept
        }

        // Where the cut is at rank m, the classes before it sum to less than the rate, so those from m on (at most n,
        // none above v*) sum to more than total − rate: v* > (total − rate)/n, with the slack. Classes below that bound
        // are ranked after the cut and need neither sorting nor summing.
        double bound = (total - rate - (2 * slack)) / n;
        ReadOnlySpan<uint> candidates = bound > 0 ? Candidates(bits, bound, scratch.Candidates) : bits;
        float threshold = Search(candidates, scratch, rate, slack);
        if (float.IsNegative(threshold) && candidates.Length < n)
        {
            // Not reachable by the bound's argument; the exact replay would settle it.
            Interlocked.Increment(ref s_exactReplays);
            return ExactThreshold(bits, scratch, rate);
        }

        return float.IsPositiveInfinity(threshold) ? ExactThreshold(bits, scratch, rate) : threshold;
    }

    /// <summary>
    /// The sum of the probabilities (double accumulators), false when one is NaN, negative or +inf; eight at a time
    /// where AVX2 is available.
    /// </summary>
    private static unsafe bool Total(ReadOnlySpan<uint> bits, out double total)
    {
        int n = bits.Length;
        int i = 0;
        uint largest = 0;
        total = 0;
        fixed (uint* data = bits)
        {
            if (Avx2.IsSupported && n >= 16)
            {
                Vector256<double> a0 = Vector256<double>.Zero, a1 = Vector256<double>.Zero;
                Vector256<uint> top = Vector256<uint>.Zero;
                for (; i + 8 <= n; i += 8)
                {
                    Vector256<uint> v = Avx.LoadVector256(data + i);
                    top = Avx2.Max(top, v);
                    Vector256<float> f = v.AsSingle();
                    a0 = Avx.Add(a0, Avx.ConvertToVector256Double(f.GetLower()));
                    a1 = Avx.Add(a1, Avx.ConvertToVector256Double(f.GetUpper()));
                }

                Vector256<double> a = Avx.Add(a0, a1);
                total = a.GetElement(0) + a.GetElement(1) + a.GetElement(2) + a.GetElement(3);
                for (int j = 0; j < 8; j++)
                {
                    largest = Math.Max(largest, top.GetElement(j));
                }
            }

            for (; i < n; i++)
            {
                largest = Math.Max(largest, data[i]);
                total += BitConverter.UInt32BitsToSingle(data[i]);
            }
        }

        return largest < 0x7F800000u;
    }

    /// <summary>The probabilities ≥ <paramref name="bound"/> (a few more is harmless), copied to <paramref name="buffer"/>.</summary>
    private static unsafe ReadOnlySpan<uint> Candidates(ReadOnlySpan<uint> bits, double bound, uint[] buffer)
    {
        float below = (float)bound;
        if (below > bound)
        {
            below = MathF.BitDecrement(below);
        }

        uint key = BitConverter.SingleToUInt32Bits(below); // non-negative floats order as their bit patterns
        int n = bits.Length;
        int m = 0;
        int i = 0;
        fixed (uint* data = bits)
        {
            if (Avx2.IsSupported)
            {
                Vector256<uint> threshold = Vector256.Create(key);
                for (; i + 8 <= n; i += 8)
                {
                    Vector256<uint> v = Avx.LoadVector256(data + i);
                    uint mask = Vector256.GreaterThanOrEqual(v, threshold).ExtractMostSignificantBits();
                    while (mask != 0)
                    {
                        int lane = System.Numerics.BitOperations.TrailingZeroCount(mask);
                        buffer[m++] = data[i + lane];
                        mask &= mask - 1;
                    }
                }
            }

            for (; i < n; i++)
            {
                if (data[i] >= key)
                {
                    buffer[m++] = data[i];
                }
            }
        }

        return buffer.AsSpan(0, m);
    }

    /// <summary>
    /// The cut among <paramref name="bits"/> (all classes ranked before it included): the threshold, −1 when the
    /// partial sums stay below the rate, NaN when ties decide, +inf when a partial sum is too close to call.
    /// </summary>
    private static float Search(ReadOnlySpan<uint> bits, Scratch scratch, float rate, double slack)
    {
        int n = bits.Length;

        // The scratch histogram is all zeros between calls: only the range of buckets in use is read and cleared.
        Span<int> counts = scratch.TopCounts;
        Span<double> sums = scratch.TopSums;
        int lowest = counts.Length;
        int highest = -1;
        for (int i = 0; i < n; i++)
        {
            uint v = bits[i];
            int bucket = (int)(v >> TopShift);
            counts[bucket]++;
            sums[bucket] += BitConverter.UInt32BitsToSingle(v);
            lowest = Math.Min(lowest, bucket);
            highest = Math.Max(highest, bucket);
        }

        try
        {
            var walk = new Walk(rate, slack);
            for (int bucket = highest; bucket >= lowest; bucket--)
            {
                if (counts[bucket] == 0 || walk.AddWhole(sums[bucket]))
                {
                    continue;
                }

                // The cut can fall in this bucket: its members, refined or sorted.
                Span<uint> members = scratch.Level(0)[..counts[bucket]];
                int m = 0;
                uint key = (uint)bucket;
                for (int i = 0; i < n; i++)
                {
                    if (bits[i] >> TopShift == key)
                    {
                        members[m++] = bits[i];
                    }
                }

                switch (WalkSet(members, TopShift, 1, ref walk, scratch))
                {
                    case Outcome.Below:
                        continue;
                    case Outcome.Cut:
                        return walk.Cut;
                    case Outcome.TiesDecide:
                        return float.NaN;
                    default:
                        Interlocked.Increment(ref s_exactReplays);
                        return float.PositiveInfinity;
                }
            }

            return -1f;
        }
        finally
        {
            Clear(counts, sums, lowest, highest);
        }
    }

    private static void Clear(Span<int> counts, Span<double> sums, int lowest, int highest)
    {
        if (highest >= lowest)
        {
            counts[lowest..(highest + 1)].Clear();
            sums[lowest..(highest + 1)].Clear();
        }
    }

    /// <summary>
    /// Walks a set of probabilities that share their bits above <paramref name="shift"/> (all larger than anything
    /// not yet added) in descending order, refining it by the next eight bits while it is large.
    /// </summary>
    private static Outcome WalkSet(Span<uint> set, int shift, int depth, ref Walk walk, Scratch scratch)
    {
        if (shift == 0)
        {
            // Every member has the same bits: one tie group.
            return walk.AddTies(BitConverter.UInt32BitsToSingle(set[0]), set.Length);
        }

        if (set.Length <= SortLimit)
        {
            set.Sort();
            for (int i = set.Length - 1; i >= 0; i--)
            {
                int tied = 1;
                while (i - tied >= 0 && set[i - tied] == set[i])
                {
                    tied++;
                }

                Outcome outcome = walk.AddTies(BitConverter.UInt32BitsToSingle(set[i]), tied);
                if (outcome != Outcome.Below)
                {
                    return outcome;
                }

                i -= tied - 1;
            }

            return Outcome.Below;
        }

        int next = Math.Max(0, shift - 8);
        int width = shift - next;
        uint mask = (1u << width) - 1;
        Span<int> counts = stackalloc int[1 << width];
        Span<double> sums = stackalloc double[1 << width];
        foreach (uint v in set)
        {
            int bucket = (int)((v >> next) & mask);
            counts[bucket]++;
            sums[bucket] += BitConverter.UInt32BitsToSingle(v);
        }

        for (int bucket = counts.Length - 1; bucket >= 0; bucket--)
        {
            if (counts[bucket] == 0 || walk.AddWhole(sums[bucket]))
            {
                continue;
            }

            Span<uint> members = scratch.Level(depth)[..counts[bucket]];
            int m = 0;
            foreach (uint v in set)
            {
                if (((v >> next) & mask) == bucket)
                {
                    members[m++] = v;
                }
            }

            Outcome outcome = WalkSet(members, next, depth + 1, ref walk, scratch);
            if (outcome != Outcome.Below)
            {
                return outcome;
            }
        }

        return Outcome.Below;
    }

    /// <summary>
    /// The exact replay of one pixel: a radix sort of the bit patterns and libtorch's accumulation, rank by rank
    /// (double accumulator, each partial sum rounded to float32).
    /// </summary>
    private static float ExactThreshold(ReadOnlySpan<uint> bits, Scratch scratch, float rate)
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
        Span<uint> src = scratch.Level(0)[..n];
        bits.CopyTo(src);
        Span<uint> dst = scratch.Buffer.AsSpan(0, n);
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

            Span<uint> swap = src;
            src = dst;
            dst = swap;
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

    /// <summary>
    /// The running partial sum in descending order, with the bound <see cref="_slack"/> on how far it can be from
    /// libtorch's sequential accumulation of the same values.
    /// </summary>
    private struct Walk
    {
        private readonly float _rate;
        private readonly double _slack;
        private double _accumulator;

        public Walk(float rate, double slack)
        {
            _rate = rate;
            _slack = slack;
            _accumulator = 0;
            Cut = float.NaN;
        }

        public float Cut { get; private set; }

        /// <summary>Adds a whole set when every partial sum in it is certainly below the rate; false (and nothing added) otherwise.</summary>
        public bool AddWhole(double sum)
        {
            double total = _accumulator + sum;
            if ((float)(total + _slack) < _rate)
            {
                _accumulator = total;
                return true;
            }

            return false;
        }

        /// <summary>Adds <paramref name="count"/> classes of probability <paramref name="value"/>, the next ones in descending order.</summary>
        public Outcome AddTies(float value, int count)
        {
            for (int i = 0; i < count; i++)
            {
                _accumulator += value;
                bool below = (float)(_accumulator + _slack) < _rate;
                bool reached = !((float)(_accumulator - _slack) < _rate);
                if (!below && !reached)
                {
                    return Outcome.TooClose;
                }

                if (reached)
                {
                    Cut = value;
                    return i == count - 1 ? Outcome.Cut : Outcome.TiesDecide;
                }
            }

            return Outcome.Below;
        }
    }

    private sealed class Scratch
    {
        [ThreadStatic]
        private static Scratch? t_current;

        private readonly uint[][] _levels;

        public Scratch(int classes)
        {
            Buffer = new uint[classes];
            Candidates = new uint[classes];
            _levels = [new uint[classes], new uint[classes], new uint[classes], new uint[classes]];
        }

        public uint[] Buffer { get; }

        public int Classes => Buffer.Length;

        /// <summary>This thread's scratch for rows of <paramref name="classes"/> (kept between calls: the kernel runs every step).</summary>
        public static Scratch ForThread(int classes)
        {
            if (t_current is not { } scratch || scratch.Classes != classes)
            {
                t_current = scratch = new Scratch(classes);
            }

            return scratch;
        }

        /// <summary>The classes that can be ranked before the cut.</summary>
        public uint[] Candidates { get; }

        public int[] TopCounts { get; } = new int[1 << (32 - TopShift)];

        public double[] TopSums { get; } = new double[1 << (32 - TopShift)];

        /// <summary>Members of the candidate set at a refinement depth.</summary>
        public Span<uint> Level(int depth) => _levels[depth];
    }
}
