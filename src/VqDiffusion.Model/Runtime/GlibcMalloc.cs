using System.Runtime.InteropServices;

namespace VqDiffusion.Model.Runtime;

/// <summary>
/// Keeps glibc from handing large freed tensor buffers back to the kernel. libtorch's CPU tensors come
/// from <c>malloc</c>; glibc serves every block above its mmap threshold (at most 32 MB) with a fresh
/// <c>mmap</c> and unmaps it on free, and trims the heap top above the trim threshold, so each denoising
/// step faults its activations in again page by page (≈ 3 GB, 650–870 thousand minor faults per 10-step
/// request on the mid-size model, ≈ 10–15 µs each). Threads other than the main one allocate from
/// per-thread arenas, whose blocks above 64 MB are always mmapped whatever the settings, and whose heaps
/// shrink on free: that is the "new thread" penalty. <see cref="Configure"/> turns mmap off for the
/// main arena and stops trimming, and <see cref="MainThreadWork"/> runs the model on the process's main
/// thread, the one thread guaranteed to use the main arena.
/// </summary>
public static class GlibcMalloc
{
    private const int MTrimThreshold = -1;
    private const int MMmapMax = -4;

    /// <summary>Whether <see cref="Configure"/> changed the allocator (false off glibc, or when disabled).</summary>
    public static bool Configured { get; private set; }

    /// <summary>
    /// Applies the settings once per process (idempotent). Set <c>VQD_MALLOC_TUNING=0</c> to leave glibc's
    /// defaults (to measure the difference). Returns whether the settings are in effect.
    /// </summary>
    public static bool Configure()
    {
        if (Configured)
        {
            return true;
        }

        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("VQD_MALLOC_TUNING") == "0")
        {
            return false;
        }

        try
        {
            // mallopt returns 1 on success; on a libc without these options (musl) it returns 0.
            Configured = mallopt(MMmapMax, 0) == 1 && mallopt(MTrimThreshold, int.MaxValue) == 1;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            Configured = false;
        }

        return Configured;
    }

    [DllImport("libc.so.6", EntryPoint = "mallopt")]
    private static extern int mallopt(int param, int value);
}
