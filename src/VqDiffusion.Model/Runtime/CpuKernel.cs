using TorchSharp;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Runtime;

/// <summary>What the C# kernels that read CPU tensors directly share: the data address and the parallelism.</summary>
internal static class CpuKernel
{
    /// <summary>As many workers as libtorch's intra-op threads (at most the cores).</summary>
    public static ParallelOptions Parallelism => new()
    {
        MaxDegreeOfParallelism = Math.Max(1, Math.Min(Environment.ProcessorCount, torch.get_num_threads())),
    };

    /// <summary>
    /// Whether a kernel can read <paramref name="t"/> through one pointer: a contiguous float32 CPU tensor of at most
    /// 2 GB (TorchSharp exposes a tensor's bytes as one span).
    /// </summary>
    public static bool Readable(Tensor t) =>
        t.device_type == DeviceType.CPU && t.dtype == ScalarType.Float32 && t.is_contiguous() && t.numel() <= int.MaxValue / sizeof(float);

    /// <summary>
    /// The address of a CPU tensor's storage. TorchSharp's <c>bytes</c> is a span over the native memory (no copy),
    /// which does not move; the tensor must outlive every use of the address.
    /// </summary>
    public static unsafe float* Float32Data(Tensor t)
    {
        fixed (byte* p = t.bytes)
        {
            return (float*)p;
        }
    }
}
