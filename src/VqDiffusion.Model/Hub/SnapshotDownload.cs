using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Hub;

/// <summary>
/// One resolution of a Hub revision with the network: the needed files that the snapshot lacks are downloaded into
/// <c>blobs/</c> first (each under its lock, verified); only when all of them are there are they linked into
/// <c>snapshots/{commit}/</c> and <c>refs/{revision}</c> written, so a failed download leaves no half snapshot behind.
/// </summary>
internal sealed class SnapshotDownload
{
    private readonly HubClient client;
    private readonly HubCache cache;
    private readonly HubModelId id;
    private readonly IProgress<HubDownloadProgress>? progress;
    private readonly HashSet<string> _files;
    private readonly List<(string RepoPath, string Etag)> _pending = [];
    private readonly Dictionary<string, string> _contents = new(StringComparer.Ordinal);
    private int _fileNumber;
    private int _fileCount;

    public SnapshotDownload(HubClient client, HubCache cache, HubModelId id, HubRevisionInfo info, IProgress<HubDownloadProgress>? progress)
    {
        this.client = client;
        this.cache = cache;
        this.id = id;
        this.progress = progress;
        Commit = info.CommitHash;
        _files = new HashSet<string>(info.Files, StringComparer.Ordinal);
    }

    private string Commit { get; }

    private string Where => $"{id} (commit {Commit})";

    public async Task<ResolvedModel> RunAsync(string? variant, CancellationToken cancellationToken)
    {
        if (!_files.Contains(PipelineFiles.ModelIndexFile))
        {
            throw new ModelLoadException($"{Where}: the repository has no {PipelineFiles.ModelIndexFile}; is it a diffusers pipeline?");
        }

        _fileCount = 1;
        string modelIndex = await FetchAsync(PipelineFiles.ModelIndexFile, cancellationToken).ConfigureAwait(false);
        IReadOnlyList<string> selected = PipelineFiles.Select(_files, modelIndex, variant, Where);
        _fileCount += selected.Count(f => !IsCached(f));
        var all = new List<string>();
        foreach (string file in selected)
        {
            string path = await FetchAsync(file, cancellationToken).ConfigureAwait(false);
            all.Add(file);
            if (WeightsLocator.IsShardIndex(file))
            {
                IReadOnlyList<string> shards = PipelineFiles.Shards(file, path, _files, Where);
                _fileCount += shards.Count(s => !IsCached(s));
                foreach (string shard in shards)
                {
                    await FetchAsync(shard, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        foreach (var (repoPath, etag) in _pending)
        {
            cache.Link(Commit, repoPath, etag);
        }

        cache.WriteRef(id.RevisionOrDefault, Commit);
        return new ResolvedModel(cache.SnapshotFolder(Commit), id.RepoId, id, Commit);
    }

    private bool IsCached(string repoPath) => File.Exists(cache.SnapshotFile(Commit, repoPath));

    /// <summary>The local path of a file's contents: its snapshot file, or its blob (linked at the end).</summary>
    private async Task<string> FetchAsync(string repoPath, CancellationToken cancellationToken)
    {
        if (_contents.TryGetValue(repoPath, out string? known))
        {
            return known;
        }

        string pointer = cache.SnapshotFile(Commit, repoPath);
        if (File.Exists(pointer))
        {
            return _contents[repoPath] = pointer; // huggingface_hub: a commit's file in the snapshot is never fetched again
        }

        HubFileMetadata meta = await client.GetFileMetadataAsync(id, Commit, repoPath, cancellationToken).ConfigureAwait(false);
        if (meta.CommitHash != Commit)
        {
            throw new ModelLoadException($"{Where}: {repoPath}: the Hub served it from commit {meta.CommitHash}, not {Commit}.");
        }

        string blob = cache.BlobPath(meta.Etag);
        int number = ++_fileNumber;
        if (!File.Exists(blob))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            using FileStream lockFile = await AcquireLockAsync(cache.LockPath(meta.Etag), cancellationToken).ConfigureAwait(false);
            if (!File.Exists(blob))
            {
                string incomplete = cache.IncompletePath(meta.Etag);
                long lastReported = -1;
                void Report(long done)
                {
                    if (done == meta.Size || done - lastReported >= (1 << 20) || lastReported < 0)
                    {
                        lastReported = done;
                        progress?.Report(new HubDownloadProgress(repoPath, number, Math.Max(_fileCount, number), done, meta.Size, false));
                    }
                }

                Report(File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0);
                await client.DownloadAsync(id, meta, incomplete, Report, cancellationToken).ConfigureAwait(false);
                File.Move(incomplete, blob, overwrite: true);
            }
        }

        progress?.Report(new HubDownloadProgress(repoPath, number, Math.Max(_fileCount, number), meta.Size, meta.Size, true));
        _pending.Add((repoPath, meta.Etag));
        return _contents[repoPath] = blob;
    }

    /// <summary>An exclusive lock on the blob's lock file (an advisory flock on Linux, as huggingface_hub's filelock takes).</summary>
    private static async Task<FileStream> AcquireLockAsync(string path, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (attempt < 3600)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
