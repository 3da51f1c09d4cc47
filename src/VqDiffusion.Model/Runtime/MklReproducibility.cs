using System.Runtime.InteropServices;

namespace VqDiffusion.Model.Runtime;

/// <summary>
/// Makes libtorch's MKL give the same bits whatever the alignment of its operands. MKL picks GEMM code paths by the
/// memory alignment of the matrices unless its Conditional Numerical Reproducibility mode is set, so a model whose
/// weights are views of a memory-mapped safetensors file (8-byte aligned) and the same model read into fresh
/// 64-byte-aligned buffers computed different last bits (measured on an AMD EPYC: 9214 of 12288 values of the tiny
/// transformer's output, up to 5.7e-6). <c>MKL_CBWR=AUTO</c> keeps the fastest code path of the processor and makes
/// it alignment-independent (no measurable cost in the phase benchmark). MKL reads the variable once, at its first
/// call, so <see cref="Configure"/> must run before any matrix product: the server, <c>vqd</c> and the benchmarks call
/// it first thing, and <see cref="Pipelines.VQDiffusionPipeline.FromPretrained"/> calls it before loading. A value the
/// operator set is left as it is.
/// </summary>
public static class MklReproducibility
{
    public const string Variable = "MKL_CBWR";

    private static readonly object Gate = new();
    private static string? s_mode;

    /// <summary>The mode in effect after <see cref="Configure"/> (the operator's value, or AUTO), null before or off Linux.</summary>
    public static string? Mode
    {
        get
        {
            lock (Gate)
            {
                return s_mode;
            }
        }
    }

    /// <summary>Sets <c>MKL_CBWR=AUTO</c> in the process environment unless it is set already (idempotent).</summary>
    public static string? Configure()
    {
        lock (Gate)
        {
            if (s_mode is not null || !OperatingSystem.IsLinux())
            {
                return s_mode;
            }

            string? existing = Environment.GetEnvironmentVariable(Variable);
            if (!string.IsNullOrEmpty(existing))
            {
                s_mode = existing;
                return s_mode;
            }

            try
            {
                // .NET keeps its own copy of the environment; MKL reads the C library's.
                if (setenv(Variable, "AUTO", 0) == 0)
                {
                    Environment.SetEnvironmentVariable(Variable, "AUTO");
                    s_mode = "AUTO";
                }
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                s_mode = null;
            }

            return s_mode;
        }
    }

    [DllImport("libc.so.6", EntryPoint = "setenv", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int setenv(string name, string value, int overwrite);
}
