using System.Diagnostics;

namespace VqDiffusion.Benchmarks;

/// <summary>Samples a process's resident memory (VmRSS) in the background until stopped.</summary>
internal sealed class RssSampler
{
    private readonly List<(double Seconds, double MiB)> _samples = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public RssSampler(int pid, TimeSpan interval)
    {
        var clock = Stopwatch.StartNew();
        _loop = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                double rss = ProcessStats.RssMiB(pid);
                lock (_samples)
                {
                    _samples.Add((clock.Elapsed.TotalSeconds, rss));
                }

                try
                {
                    await Task.Delay(interval, _stop.Token);
                }
                catch (OperationCanceledException)
                {
                }
            }
        });
    }

    public IReadOnlyList<(double Seconds, double MiB)> Samples
    {
        get
        {
            lock (_samples)
            {
                return _samples.ToArray();
            }
        }
    }

    public double PeakMiB => Samples.Count == 0 ? double.NaN : Samples.Max(s => s.MiB);

    public async Task StopAsync()
    {
        _stop.Cancel();
        await _loop;
    }

    /// <summary>"t=0s 512 | t=10s 520 | …": one sample per <paramref name="every"/> seconds.</summary>
    public string Timeline(double every)
    {
        var picked = new List<string>();
        double next = 0;
        foreach (var (seconds, mib) in Samples)
        {
            if (seconds >= next)
            {
                picked.Add($"{seconds:F0}s {mib:F0}");
                next += every;
            }
        }

        return string.Join(" | ", picked);
    }
}
