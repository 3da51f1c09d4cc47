using System.Globalization;
using VqDiffusion.Model.Hub;

namespace VqDiffusion.Server.Services;

/// <summary>Logs the download of a Hub model: each file's start (size, resumed bytes), every 10 % of a large file, and its end.</summary>
public sealed class HubDownloadLog(ILogger logger) : IProgress<HubDownloadProgress>
{
    private const long LargeFile = 8L << 20;
    private readonly Dictionary<string, int> _lastDecile = new(StringComparer.Ordinal);

    public void Report(HubDownloadProgress value)
    {
        ArgumentNullException.ThrowIfNull(value);
        lock (_lastDecile)
        {
            if (!_lastDecile.TryGetValue(value.RepoPath, out int last))
            {
                last = -1;
                logger.LogInformation(
                    "Hub download {FileNumber}/{FileCount}: {File} ({SizeMiB} MiB{Resumed})",
                    value.FileNumber, value.FileCount, value.RepoPath, MiB(value.BytesTotal),
                    value.BytesDone > 0 && !value.Completed ? $", resuming at {MiB(value.BytesDone)} MiB" : string.Empty);
            }

            if (value.Completed)
            {
                if (last < 10)
                {
                    logger.LogInformation("Hub download {FileNumber}/{FileCount}: {File} done", value.FileNumber, value.FileCount, value.RepoPath);
                }

                _lastDecile[value.RepoPath] = 10;
                return;
            }

            int decile = value.BytesTotal > 0 ? (int)(value.BytesDone * 10 / value.BytesTotal) : 0;
            if (value.BytesTotal >= LargeFile && decile > last && last >= 0 && decile < 10)
            {
                logger.LogInformation("Hub download {FileNumber}/{FileCount}: {File} {Percent} % ({DoneMiB}/{SizeMiB} MiB)", value.FileNumber, value.FileCount, value.RepoPath, decile * 10, MiB(value.BytesDone), MiB(value.BytesTotal));
            }

            _lastDecile[value.RepoPath] = Math.Max(decile, 0);
        }
    }

    private static string MiB(long bytes) => (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture);
}
