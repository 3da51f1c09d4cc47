using System.Runtime.InteropServices;

namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>POSIX signals to a child process (.NET's Process.Kill only sends SIGKILL).</summary>
internal static class Signals
{
    public const int SigTerm = 15;

    public static void Send(int pid, int signal)
    {
        if (NativeKill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int NativeKill(int pid, int signal);
}
