using System.Globalization;
using VqDiffusion.Model.Hub;

namespace VqDiffusion.Cli;

/// <summary>The download of a Hub model on stderr: <c>[#####.....] file 3/14 transformer/diffusion_pytorch_model.safetensors 12.3/54.1 MiB</c>.</summary>
public sealed class DownloadProgressBar(TextWriter writer, bool interactive) : IProgress<HubDownloadProgress>
{
    private const int Width = 30;
    private string? _current;

    public void Report(HubDownloadProgress value)
    {
        ArgumentNullException.ThrowIfNull(value);
        bool first = value.RepoPath != _current;
        _current = value.RepoPath;
        if (!interactive && !first && !value.Completed)
        {
            return;
        }

        int filled = value.BytesTotal == 0 ? Width : (int)(value.BytesDone * Width / value.BytesTotal);
        string line = string.Create(
            CultureInfo.InvariantCulture,
            $"[{new string('#', filled)}{new string('.', Width - filled)}] file {value.FileNumber}/{value.FileCount} {value.RepoPath} {value.BytesDone / 1048576.0:F1}/{value.BytesTotal / 1048576.0:F1} MiB");
        writer.Write(interactive ? "\r" + line + "\u001b[K" : line + Environment.NewLine);
        if (value.Completed && interactive)
        {
            writer.WriteLine();
        }

        writer.Flush();
    }
}
