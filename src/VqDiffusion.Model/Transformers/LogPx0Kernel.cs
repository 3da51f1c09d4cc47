using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using VqDiffusion.Model.Runtime;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// <see cref="Transformer2DModel.LogPx0"/> on the CPU without the whole-tensor float64 temporaries: the logits
/// <c>[R, N, C]</c> go through libtorch's float64 <c>log_softmax</c> a slice of pixels at a time (libtorch computes
/// every row of a last-dimension softmax on its own, so a slice gives the same bits as the whole tensor), and each
/// slice is rounded to float32 into <c>[R, N, C]</c> storage, returned as the permuted <c>[R, C, N]</c> view (each
/// pixel's classes contiguous, as diffusers' log p(x0)). Optionally the classifier-free guidance mix
/// <c>uncond + g·(text − uncond)</c> is applied on the way out, as the same float32 operations libtorch performs on
/// the rounded values, so that only the guided rows are written.
/// </summary>
internal static class LogPx0Kernel
{
    /// <summary>Rows (pixels × batch rows) of one float64 slice: 8 MB of doubles at 4096 classes, in the cache.</summary>
    private const int RowsPerSlice = 256;

    /// <summary>
    /// log p(x0) <c>[R, C, N]</c> float32 (class-contiguous) of logits <c>[R, N, C]</c>; null when the logits are not
    /// a contiguous float32 CPU tensor of three dimensions.
    /// </summary>
    public static Tensor? TryLogPx0(Tensor logits) => Run(logits, null);

    /// <summary>
    /// The guided log p(x0) before its renormalisation, <c>[R/2, C, N]</c>: rows <c>0..R/2</c> of the logits are the
    /// unconditional ones, <c>R/2..R</c> the text ones (the pipeline's order); null as for <see cref="TryLogPx0"/>,
    /// or when R is odd.
    /// </summary>
    public static Tensor? TryGuided(Tensor logits, float guidanceScale) =>
        logits.dim() == 3 && logits.shape[0] % 2 == 0 ? Run(logits, guidanceScale) : null;

    private static Tensor? Run(Tensor logits, float? guidanceScale)
    {
        if (logits.dim() != 3 || !CpuKernel.Readable(logits))
        {
            return null;
        }

        long rows = logits.shape[0];
        int pixels = (int)logits.shape[1];
        int classes = (int)logits.shape[2];
        long outRows = guidanceScale is null ? rows : rows / 2;
        if (outRows * classes * (long)pixels > int.MaxValue)
        {
            return null;
        }

        // [R, N, C] storage: each pixel's classes contiguous, as diffusers' permuted log-softmax output.
        Tensor output = empty([outRows, pixels, classes], ScalarType.Float32);
        int slicePixels = (int)Math.Clamp(RowsPerSlice / rows, 1, pixels);
        for (int n0 = 0; n0 < pixels; n0 += slicePixels)
        {
            int width = Math.Min(slicePixels, pixels - n0);
            using var scope = NewDisposeScope();
            using Tensor slice = logits.narrow(1, n0, width);
            using Tensor asDouble = slice.to(ScalarType.Float64);
            using Tensor logP = asDouble.log_softmax(-1);
            if (!logP.is_contiguous())
            {
                throw new InvalidOperationException("log_softmax returned a non-contiguous tensor.");
            }

            unsafe
            {
                double* source = Float64Data(logP);
                float* target = CpuKernel.Float32Data(output);
                long count = (long)width * classes;
                bool guided = guidanceScale is not null;
                float g = guidanceScale ?? 0f;
                Parallel.For(0L, outRows * width, CpuKernel.Parallelism, job =>
                {
                    long r = job / width;
                    long j = job % width;
                    double* row = source + (r * count) + (j * classes);
                    float* rowTarget = target + (((r * pixels) + n0 + j) * classes);
                    if (guided)
                    {
                        MixRow(row, row + (outRows * count), g, rowTarget, classes);
                    }
                    else
                    {
                        RoundRow(row, rowTarget, classes);
                    }
                });
            }

        }

        return output.permute(0, 2, 1);
    }

    /// <summary>
    /// One pixel's guided row: IEEE single-precision rounding of each double, then the guidance's subtraction,
    /// multiplication and addition, each rounded (no fused multiply-add), eight at a time where AVX is available.
    /// </summary>
    private static unsafe void MixRow(double* uncond, double* text, float g, float* target, int classes)
    {
        int k = 0;
        if (Avx.IsSupported)
        {
            Vector256<float> scale = Vector256.Create(g);
            for (; k + 8 <= classes; k += 8)
            {
                Vector256<float> u = Vector256.Create(Avx.ConvertToVector128Single(Avx.LoadVector256(uncond + k)), Avx.ConvertToVector128Single(Avx.LoadVector256(uncond + k + 4)));
                Vector256<float> t = Vector256.Create(Avx.ConvertToVector128Single(Avx.LoadVector256(text + k)), Avx.ConvertToVector128Single(Avx.LoadVector256(text + k + 4)));
                Avx.Store(target + k, Avx.Add(u, Avx.Multiply(scale, Avx.Subtract(t, u))));
            }
        }

        for (; k < classes; k++)
        {
            target[k] = Mix((float)uncond[k], (float)text[k], g);
        }
    }

    /// <summary>One pixel's row rounded to float32 (IEEE round to nearest, as libtorch's conversion), eight at a time where AVX is available.</summary>
    private static unsafe void RoundRow(double* source, float* target, int classes)
    {
        int k = 0;
        if (Avx.IsSupported)
        {
            for (; k + 8 <= classes; k += 8)
            {
                Avx.Store(target + k, Vector256.Create(Avx.ConvertToVector128Single(Avx.LoadVector256(source + k)), Avx.ConvertToVector128Single(Avx.LoadVector256(source + k + 4))));
            }
        }

        for (; k < classes; k++)
        {
            target[k] = (float)source[k];
        }
    }

    /// <summary>The float32 operations of <c>uncond + g * (text - uncond)</c> on the rounded log-probabilities.</summary>
    private static float Mix(float uncond, float text, float g)
    {
        float difference = text - uncond;
        float scaled = g * difference;
        return uncond + scaled;
    }

    private static unsafe double* Float64Data(Tensor t)
    {
        if (t.dtype != ScalarType.Float64 || t.device_type != DeviceType.CPU || !t.is_contiguous())
        {
            throw new ArgumentException("a contiguous float64 CPU tensor is required", nameof(t));
        }

        fixed (byte* p = t.bytes)
        {
            return (double*)p;
        }
    }
}
