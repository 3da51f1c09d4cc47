using System.Diagnostics;

namespace VqDiffusion.Cli;

/// <summary>A one-line progress bar on stderr: <c>[#####.....] 37/100 t=63 4.2 it/s</c>.</summary>
public sealed class ProgressBar
{
    private const int Width = 30;
    private readonly TextWriter _writer;
    private readonly bool _interactive;
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public ProgressBar(TextWriter writer, bool interactive)
    {
        _writer = writer;
        _interactive = interactive;
    }

    public void Report(int completed, int total, long timestep)
    {
        bool last = completed == total;
        if (!_interactive && !last && completed % Math.Max(1, total / 10) != 0)
        {
            return;
        }

        int filled = total == 0 ? Width : completed * Width / total;
        double rate = completed / Math.Max(_clock.Elapsed.TotalSeconds, 1e-9);
        string line = $"[{new string('#', filled)}{new string('.', Width - filled)}] {completed}/{total} t={timestep} {rate:F1} it/s";
        _writer.Write(_interactive ? "\r" + line : line + Environment.NewLine);
        if (last && _interactive)
        {
            _writer.WriteLine();
        }

        _writer.Flush();
    }
}
