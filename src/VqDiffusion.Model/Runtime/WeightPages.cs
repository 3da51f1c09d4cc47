using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Runtime;

/// <summary>
/// Brings the pages of CPU weight tensors into memory before they are first used. Weights mapped from a safetensors
/// file are read from disk (or mapped from the page cache) on first touch, one fault per few pages; the warm-up runs
/// only part of the transformer (<see cref="Pipelines.VQDiffusionPipeline.WarmUp"/>), so the rest would be faulted in
/// by the first request. On Linux one <c>madvise(MADV_POPULATE_READ)</c> per tensor maps its pages (reading them
/// sequentially); where the kernel lacks it (before 5.14) one byte per page is read instead. Weights already in
/// anonymous memory cost a page-table walk.
/// </summary>
public static class WeightPages
{
    private const int MadvPopulateRead = 22;
    private const long PageSize = 4096;

    /// <summary>Touches every page of the CPU tensors among <paramref name="tensors"/>; returns their bytes.</summary>
    public static long Prefetch(IEnumerable<Tensor> tensors) => Prefetch(tensors, populatePages: true);

    /// <summary>As <see cref="Prefetch(IEnumerable{Tensor})"/>; <paramref name="populatePages"/> false reads a byte per page (the fallback).</summary>
    internal static long Prefetch(IEnumerable<Tensor> tensors, bool populatePages)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        long total = 0;
        bool populate = populatePages && OperatingSystem.IsLinux();
        foreach (Tensor t in tensors)
        {
            long bytes = t.numel() * t.ElementSize;
            if (t.device_type != DeviceType.CPU || bytes == 0 || bytes > int.MaxValue || !t.is_contiguous())
            {
                continue; // (TorchSharp exposes a tensor's bytes as one span, at most 2 GB: no weight tensor is near that)
            }

            unsafe
            {
                fixed (byte* start = t.bytes)
                {
                    if (populate)
                    {
                        long first = (long)start & ~(PageSize - 1);
                        long length = (long)start + bytes - first;
                        populate = madvise((nint)first, (nuint)length, MadvPopulateRead) == 0;
                    }

                    if (!populate)
                    {
                        Touch(start, bytes);
                    }
                }
            }

            total += bytes;
        }

        return total;
    }

    private static unsafe void Touch(byte* start, long bytes)
    {
        int sum = 0;
        for (long offset = 0; offset < bytes; offset += PageSize)
        {
            sum += Volatile.Read(ref start[offset]);
        }

        GC.KeepAlive(sum);
    }

    [DllImport("libc.so.6", EntryPoint = "madvise", SetLastError = true)]
    private static extern int madvise(nint addr, nuint length, int advice);
}
