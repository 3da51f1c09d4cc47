using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using VqDiffusion.Model.Runtime;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Schedulers;

/// <summary>
/// The exact arithmetic of <see cref="VQDiffusionScheduler.QPosterior"/> and the Gumbel-max sample around libtorch's
/// transcendental kernels and reductions, without the full-size transition tensors. Per latent pixel the
/// transition log-probabilities take two values over the known classes (at x_t's class and elsewhere) or one
/// (when x_t is the mask), so they are applied on the fly; the additions and subtractions are the same IEEE
/// single-precision operations in the same order as diffusers' formula, while <c>logsumexp</c>, <c>logaddexp</c>,
/// the uniform draw and the Gumbel logarithms stay libtorch's. Log-probabilities are in the pipeline's layout: a
/// <c>[B, N, K]</c> tensor seen as <c>[B, K, N]</c> (each pixel's classes contiguous, as diffusers' permuted
/// log-softmax), so libtorch reduces along memory as it does for diffusers. The result is bit for bit the unfused
/// computation's on the same layout (the tests compare them).
/// </summary>
internal static class PosteriorKernel
{
    private const int PixelBlock = 8;

    /// <summary>One timestep's transition values: at x_t's class, elsewhere, and everywhere when x_t is the mask.</summary>
    public readonly record struct Transition(float Hit, float Miss, float Mask)
    {
        public float At(int k, int token, int maskClass) => token == maskClass ? Mask : k == token ? Hit : Miss;
    }

    /// <summary>
    /// The <c>[B, N, K]</c> storage of a <c>[B, K, N]</c> float32 CPU tensor whose classes are contiguous per pixel;
    /// null for any other tensor.
    /// </summary>
    public static Tensor? Rows(Tensor logits)
    {
        if (logits.dim() != 3 || logits.device_type != DeviceType.CPU || logits.dtype != ScalarType.Float32)
        {
            return null;
        }

        Tensor rows = logits.transpose(1, 2);
        if (CpuKernel.Readable(rows))
        {
            return rows;
        }

        rows.Dispose();
        return null;
    }

    /// <summary>Whether the kernels apply: class-contiguous float32 log-probabilities and int64 tokens [B, N] on the CPU.</summary>
    public static bool Applies(Tensor logPx0, Tensor xT)
    {
        using Tensor? rows = Rows(logPx0);
        return rows is not null && xT.device_type == DeviceType.CPU && xT.dtype == ScalarType.Int64
            && xT.dim() == 2 && xT.shape[0] == logPx0.shape[0] && xT.shape[1] == logPx0.shape[2];
    }

    /// <summary>x_t as one int per pixel, [B·N].</summary>
    public static int[] Tokens(Tensor xT)
    {
        using Tensor contiguous = xT.contiguous();
        long[] values = contiguous.data<long>().ToArray();
        var tokens = new int[values.Length];
        for (int i = 0; i < tokens.Length; i++)
        {
            tokens[i] = (int)values[i];
        }

        return tokens;
    }

    /// <summary>
    /// <c>log p(x0) − log q(x_t | x0)</c>: diffusers' <c>q = log_p_x_0 − log_q_x_t_given_x_0</c>, in the layout of
    /// <paramref name="logPx0"/> (class-contiguous, <see cref="Applies"/>).
    /// </summary>
    public static Tensor SubtractTransition(Tensor logPx0, int[] tokens, Transition cumulative, int maskClass)
    {
        using Tensor source = Rows(logPx0) ?? throw new ArgumentException("class-contiguous log-probabilities expected", nameof(logPx0));
        long rows = source.shape[0] * source.shape[1];
        int classes = (int)source.shape[2];
        Tensor q = empty_like(source);
        unsafe
        {
            float* s = CpuKernel.Float32Data(source);
            float* t = CpuKernel.Float32Data(q);
            Parallel.For(0L, rows, CpuKernel.Parallelism, row =>
            {
                int token = tokens[row];
                float* sr = s + (row * classes);
                float* tr = t + (row * classes);
                float value = token == maskClass ? cumulative.Mask : cumulative.Miss;
                int k = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    Vector256<float> v = Vector256.Create(value);
                    for (; k + 8 <= classes; k += 8)
                    {
                        (Vector256.Load(sr + k) - v).Store(tr + k);
                    }
                }

                for (; k < classes; k++)
                {
                    tr[k] = sr[k] - value;
                }

                if (token != maskClass && token < classes)
                {
                    tr[token] = sr[token] - cumulative.Hit;
                }
            });
        }

        using (q)
        {
            return q.transpose(1, 2);
        }
    }

    /// <summary>
    /// In place, <c>q = (q − logsumexp) + a</c>: diffusers' <c>q − q_log_sum_exp</c>, then the <c>+ a</c> of
    /// <c>apply_cumulative_transitions</c>. <paramref name="q"/> is class-contiguous, <paramref name="logSumExp"/> [B, 1, N].
    /// </summary>
    public static void NormalizeAndShift(Tensor q, Tensor logSumExp, float a)
    {
        using Tensor data = Rows(q) ?? throw new ArgumentException("class-contiguous q expected", nameof(q));
        long rows = data.shape[0] * data.shape[1];
        int classes = (int)data.shape[2];
        using Tensor lse = logSumExp.contiguous();
        unsafe
        {
            float* d = CpuKernel.Float32Data(data);
            float* l = CpuKernel.Float32Data(lse);
            Parallel.For(0L, rows, CpuKernel.Parallelism, row =>
            {
                float* dr = d + (row * classes);
                float lr = l[row];
                int k = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    Vector256<float> lv = Vector256.Create(lr);
                    Vector256<float> av = Vector256.Create(a);
                    for (; k + 8 <= classes; k += 8)
                    {
                        Vector256<float> normalized = Vector256.Load(dr + k) - lv;
                        (normalized + av).Store(dr + k);
                    }
                }

                for (; k < classes; k++)
                {
                    float normalized = dr[k] - lr;
                    dr[k] = normalized + a;
                }
            });
        }
    }

    /// <summary>
    /// <c>L = log(−log(u + 1e-30) + 1e-30)</c> for one <c>torch.rand</c> draw of <paramref name="shape"/> from the
    /// generator: diffusers' Gumbel noise is <c>−L</c>. The logarithms are libtorch's; the negation and the second
    /// <c>+ 1e-30</c> are one pass here (the same float32 operations as libtorch's <c>neg_</c> and <c>add_</c>, with
    /// 1e-30 rounded to float32 as libtorch rounds the scalar), and the final negation is left to the argmax.
    /// </summary>
    public static Tensor GumbelLogs(long[] shape, torch.Generator? generator)
    {
        Tensor u = rand(shape, dtype: ScalarType.Float32, device: CPU, generator: generator);
        u.add_(1e-30).log_();
        long count = u.numel();
        const float Tiny = (float)1e-30;
        unsafe
        {
            float* data = CpuKernel.Float32Data(u);
            const int Chunk = 1 << 16;
            Parallel.For(0L, (count + Chunk - 1) / Chunk, CpuKernel.Parallelism, job =>
            {
                long start = job * Chunk;
                long end = Math.Min(count, start + Chunk);
                long i = start;
                if (Vector256.IsHardwareAccelerated)
                {
                    Vector256<float> tiny = Vector256.Create(Tiny);
                    for (; i + 8 <= end; i += 8)
                    {
                        Vector256<float> negated = -Vector256.Load(data + i);
                        (negated + tiny).Store(data + i);
                    }
                }

                for (; i < end; i++)
                {
                    float negated = -data[i];
                    data[i] = negated + Tiny;
                }
            });
        }

        return u.log_();
    }

    /// <summary>
    /// <c>(noise + log p(x_{t−1})).argmax(1)</c> with <c>log p(x_{t−1}) = (cat([r, c_{t−1}]) + log q(x_t | x_{t−1})) + logsumexp</c>
    /// computed on the fly: <paramref name="r"/> is <c>(q + a).logaddexp(b)</c> (class-contiguous [B, K−1, N]),
    /// <paramref name="noise"/> holds <see cref="GumbelLogs"/> (the Gumbel noise is their negation, and
    /// <c>−L + logit</c> is computed as the identical IEEE <c>logit − L</c>), the mask row's value is
    /// <paramref name="maskRow"/> (log ct̄ at t − 1), and the mask row of <c>log q(x_t | x_{t−1})</c> is log 1 = 0
    /// where x_t is the mask and <paramref name="logTiny"/> elsewhere. Ties keep the first class and a NaN counts as
    /// the maximum, as libtorch's argmax does.
    /// </summary>
    public static Tensor GumbelArgmax(Tensor noise, Tensor r, Tensor logSumExp, int[] tokens, Transition step, float maskRow, float logTiny, int maskClass)
    {
        using Tensor rRows = Rows(r) ?? r.transpose(1, 2).contiguous();
        long batch = rRows.shape[0];
        int pixels = (int)rRows.shape[1];
        int known = (int)rRows.shape[2];
        using Tensor lse = logSumExp.contiguous();
        if (!CpuKernel.Readable(noise) || noise.shape[1] != known + 1 || noise.shape[2] != pixels)
        {
            throw new ArgumentException("noise must be a contiguous float32 CPU tensor [B, K, N].", nameof(noise));
        }

        var result = new long[batch * pixels];
        int blocks = (pixels + PixelBlock - 1) / PixelBlock;
        unsafe
        {
            float* noiseData = CpuKernel.Float32Data(noise);
            float* rData = CpuKernel.Float32Data(rRows);
            float* lseData = CpuKernel.Float32Data(lse);
            Parallel.For(0L, batch * blocks, CpuKernel.Parallelism, block =>
            {
                long b = block / blocks;
                int n0 = (int)(block % blocks) * PixelBlock;
                int width = Math.Min(PixelBlock, pixels - n0);
                int offset = (int)(b * pixels) + n0;
                var pixelBlock = new PixelBlockArgs(
                    noiseData + (b * (known + 1) * pixels) + n0,
                    rData + ((long)offset * known),
                    lseData + offset,
                    tokens.AsSpan(offset, width),
                    pixels,
                    known,
                    step,
                    maskRow,
                    logTiny,
                    maskClass);
                Span<long> target = result.AsSpan(offset, width);
                if (Avx2.IsSupported && width == PixelBlock)
                {
                    ArgmaxBlockAvx(in pixelBlock, target);
                }
                else
                {
                    ArgmaxBlock(in pixelBlock, target);
                }
            });
        }

        return tensor(result, [batch, pixels], ScalarType.Int64);
    }

    /// <summary>One block of up to <see cref="PixelBlock"/> pixels, one at a time.</summary>
    private static unsafe void ArgmaxBlock(in PixelBlockArgs a, Span<long> target)
    {
        for (int j = 0; j < a.Tokens.Length; j++)
        {
            int token = a.Tokens[j];
            float best = float.NegativeInfinity;
            int index = 0;
            float* row = a.R + ((long)j * a.Known);
            for (int k = 0; k <= a.Known; k++)
            {
                float logQt = k < a.Known ? a.Step.At(k, token, a.MaskClass) : token == a.MaskClass ? 0f : a.LogTiny;
                float value = k < a.Known ? row[k] : a.MaskRow;
                float v = Logit(value, logQt, a.LogSumExp[j]) - a.Noise[((long)k * a.Pixels) + j];
                if (v > best || (float.IsNaN(v) && !float.IsNaN(best)))
                {
                    best = v;
                    index = k;
                }
            }

            target[j] = index;
        }
    }

    /// <summary>
    /// One block of eight pixels with AVX: r read eight classes × eight pixels at a time and transposed in
    /// registers; per class <c>v = noise + ((value + log q) + logsumexp)</c> and the running argmax, lane by lane
    /// the same IEEE operations as <see cref="ArgmaxBlock"/>.
    /// </summary>
    private static unsafe void ArgmaxBlockAvx(in PixelBlockArgs a, Span<long> target)
    {
        int* tokenLanes = stackalloc int[PixelBlock];
        float* lseLanes = stackalloc float[PixelBlock];
        for (int j = 0; j < PixelBlock; j++)
        {
            tokenLanes[j] = a.Tokens[j];
            lseLanes[j] = a.LogSumExp[j];
        }

        Vector256<int> tokens = Avx.LoadVector256(tokenLanes);
        Vector256<float> isMask = Avx2.CompareEqual(tokens, Vector256.Create(a.MaskClass)).AsSingle();
        Vector256<float> lse = Avx.LoadVector256(lseLanes);
        Vector256<float> atToken = Avx.BlendVariable(Vector256.Create(a.Step.Hit), Vector256.Create(a.Step.Mask), isMask);
        Vector256<float> elsewhere = Avx.BlendVariable(Vector256.Create(a.Step.Miss), Vector256.Create(a.Step.Mask), isMask);
        var state = new ArgmaxState(Vector256.Create(float.NegativeInfinity), Vector256<int>.Zero);
        float* r = a.R;
        long stride = a.Known;
        int k0 = 0;
        for (; k0 + 8 <= a.Known; k0 += 8)
        {
            Vector256<float> r0 = Avx.LoadVector256(r + k0), r1 = Avx.LoadVector256(r + stride + k0);
            Vector256<float> r2 = Avx.LoadVector256(r + (2 * stride) + k0), r3 = Avx.LoadVector256(r + (3 * stride) + k0);
            Vector256<float> r4 = Avx.LoadVector256(r + (4 * stride) + k0), r5 = Avx.LoadVector256(r + (5 * stride) + k0);
            Vector256<float> r6 = Avx.LoadVector256(r + (6 * stride) + k0), r7 = Avx.LoadVector256(r + (7 * stride) + k0);
            Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1), t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
            Vector256<float> t4 = Avx.UnpackLow(r4, r5), t5 = Avx.UnpackHigh(r4, r5), t6 = Avx.UnpackLow(r6, r7), t7 = Avx.UnpackHigh(r6, r7);
            Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE), u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
            Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44), u5 = Avx.Shuffle(t4, t6, 0xEE), u6 = Avx.Shuffle(t5, t7, 0x44), u7 = Avx.Shuffle(t5, t7, 0xEE);
            state.Update(k0, Avx.Permute2x128(u0, u4, 0x20), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 1, Avx.Permute2x128(u1, u5, 0x20), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 2, Avx.Permute2x128(u2, u6, 0x20), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 3, Avx.Permute2x128(u3, u7, 0x20), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 4, Avx.Permute2x128(u0, u4, 0x31), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 5, Avx.Permute2x128(u1, u5, 0x31), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 6, Avx.Permute2x128(u2, u6, 0x31), in a, tokens, atToken, elsewhere, lse);
            state.Update(k0 + 7, Avx.Permute2x128(u3, u7, 0x31), in a, tokens, atToken, elsewhere, lse);
        }

        float* column = stackalloc float[PixelBlock];
        for (int k = k0; k < a.Known; k++)
        {
            for (int j = 0; j < PixelBlock; j++)
            {
                column[j] = r[(j * stride) + k];
            }

            state.Update(k, Avx.LoadVector256(column), in a, tokens, atToken, elsewhere, lse);
        }

        // The mask row: log ct̄ at t − 1, plus log 1 = 0 where x_t is the mask and log 1e-30 elsewhere.
        Vector256<float> maskQt = Avx.BlendVariable(Vector256.Create(a.LogTiny), Vector256<float>.Zero, isMask);
        state.Update(a.Known, Vector256.Create(a.MaskRow), in a, Vector256.Create(-1), maskQt, maskQt, lse);

        int* index = stackalloc int[PixelBlock];
        Avx.Store(index, state.Index);
        for (int j = 0; j < PixelBlock; j++)
        {
            target[j] = index[j];
        }
    }

    /// <summary>The running maximum and its class per lane.</summary>
    private struct ArgmaxState
    {
        public ArgmaxState(Vector256<float> best, Vector256<int> index)
        {
            Best = best;
            Index = index;
        }

        public Vector256<float> Best { get; private set; }

        public Vector256<int> Index { get; private set; }

        /// <summary>
        /// Class <paramref name="k"/>: log q is <paramref name="atToken"/> where x_t = k, else
        /// <paramref name="elsewhere"/>; a lane takes v when v &gt; best, or when v is NaN and best is not.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public unsafe void Update(int k, Vector256<float> values, in PixelBlockArgs a, Vector256<int> tokens, Vector256<float> atToken, Vector256<float> elsewhere, Vector256<float> lse)
        {
            Vector256<int> kVector = Vector256.Create(k);
            Vector256<float> logQt = Avx.BlendVariable(elsewhere, atToken, Avx2.CompareEqual(tokens, kVector).AsSingle());
            Vector256<float> withTransition = Avx.Add(values, logQt);
            Vector256<float> logit = Avx.Add(withTransition, lse);
            Vector256<float> v = Avx.Subtract(logit, Avx.LoadVector256(a.Noise + ((long)k * a.Pixels)));
            Vector256<float> current = Best;
            Vector256<float> greater = Avx.Compare(v, current, FloatComparisonMode.OrderedGreaterThanNonSignaling);
            Vector256<float> vIsNaN = Avx.Compare(v, v, FloatComparisonMode.UnorderedNonSignaling);
            Vector256<float> currentIsNaN = Avx.Compare(current, current, FloatComparisonMode.UnorderedNonSignaling);
            Vector256<float> update = Avx.Or(greater, Avx.AndNot(currentIsNaN, vIsNaN));
            Best = Avx.BlendVariable(current, v, update);
            Index = Avx.BlendVariable(Index.AsSingle(), kVector.AsSingle(), update).AsInt32();
        }
    }

    /// <summary>What one block of pixels reads: its noise, r rows, logsumexp and tokens, and the step's values.</summary>
    private readonly unsafe ref struct PixelBlockArgs
    {
        public PixelBlockArgs(float* noise, float* r, float* logSumExp, ReadOnlySpan<int> tokens, int pixels, int known, Transition step, float maskRow, float logTiny, int maskClass)
        {
            Noise = noise;
            R = r;
            LogSumExp = logSumExp;
            Tokens = tokens;
            Pixels = pixels;
            Known = known;
            Step = step;
            MaskRow = maskRow;
            LogTiny = logTiny;
            MaskClass = maskClass;
        }

        /// <summary>The block's first pixel at class 0 of the [K, N] Gumbel logarithms; class k is <see cref="Pixels"/> further.</summary>
        public float* Noise { get; }

        /// <summary>The block's first pixel's row of r ([N, K−1] per image).</summary>
        public float* R { get; }

        public float* LogSumExp { get; }

        public ReadOnlySpan<int> Tokens { get; }

        public int Pixels { get; }

        public int Known { get; }

        public Transition Step { get; }

        public float MaskRow { get; }

        public float LogTiny { get; }

        public int MaskClass { get; }
    }

    /// <summary>
    /// The log p(x_{t−1}) that <see cref="GumbelArgmax"/> computes on the fly, materialised [B, K, N] (for the tests
    /// that compare it with the unfused q_posterior bit for bit).
    /// </summary>
    public static Tensor Materialize(Tensor r, Tensor logSumExp, int[] tokens, Transition step, float maskRow, float logTiny, int maskClass)
    {
        using Tensor rRows = r.transpose(1, 2).contiguous();
        long batch = rRows.shape[0];
        int pixels = (int)rRows.shape[1];
        int known = (int)rRows.shape[2];
        using Tensor lse = logSumExp.contiguous();
        var values = new float[batch * (known + 1) * pixels];
        unsafe
        {
            float* rData = CpuKernel.Float32Data(rRows);
            float* lseData = CpuKernel.Float32Data(lse);
            for (long b = 0; b < batch; b++)
            {
                for (int k = 0; k <= known; k++)
                {
                    for (int n = 0; n < pixels; n++)
                    {
                        int token = tokens[(b * pixels) + n];
                        float logQt = k < known ? step.At(k, token, maskClass) : token == maskClass ? 0f : logTiny;
                        float value = k < known ? rData[(((b * pixels) + n) * known) + k] : maskRow;
                        values[(((b * (known + 1)) + k) * pixels) + n] = Logit(value, logQt, lseData[(b * pixels) + n]);
                    }
                }
            }
        }

        return tensor(values, [batch, known + 1, pixels]);
    }

    /// <summary>diffusers' <c>q + log_q_t_given_x_t_min_1 + q_log_sum_exp</c> for one element: two float32 additions, left to right.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Logit(float value, float logQt, float logSumExp)
    {
        float withTransition = value + logQt;
        return withTransition + logSumExp;
    }
}
