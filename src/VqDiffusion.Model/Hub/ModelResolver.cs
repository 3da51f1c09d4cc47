using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Hub;

/// <summary>
/// Turns what a user names as the model (<c>Model:Path</c>, <c>vqd generate --model</c>) into a folder to load: an
/// existing folder is used as it is; otherwise a Hub id (<c>org/name</c>, <c>org/name@revision</c>) resolves like
/// huggingface_hub's <c>snapshot_download</c> restricted to the files the pipeline needs: the revision's commit from
/// the Hub (or, offline, from <c>refs/</c>), each file that is not yet in the snapshot downloaded into
/// <c>blobs/</c> (resumable, verified), then linked into <c>snapshots/{commit}/</c> and the ref recorded. A file
/// already in the snapshot is never fetched again; a commit-hash revision that is complete in the cache needs no
/// network at all, a branch or tag one request (its current commit). When the Hub cannot be reached, a complete
/// cached snapshot of the revision is used, as huggingface_hub does.
/// </summary>
public static class ModelResolver
{
    /// <summary>True when <paramref name="value"/> names a Hub model rather than a folder (no such folder exists and it parses as an id).</summary>
    public static bool IsHubId(string value) => !Directory.Exists(value) && HubModelId.TryParse(value, out _);

    public static async Task<ResolvedModel> ResolveAsync(
        string pathOrId,
        string? variant,
        HubOptions hub,
        IProgress<HubDownloadProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrId);
        ArgumentNullException.ThrowIfNull(hub);
        if (!IsHubId(pathOrId) || !HubModelId.TryParse(pathOrId, out HubModelId id))
        {
            string folder = Path.GetFullPath(pathOrId);
            return new ResolvedModel(folder, Path.GetFileName(folder.TrimEnd(Path.DirectorySeparatorChar)), null, null);
        }

        var cache = new HubCache(hub.CacheDir, id);
        string revision = id.RevisionOrDefault;
        if (hub.Offline)
        {
            return FromCache(cache, variant, offlineReason: "HF_HUB_OFFLINE is set");
        }

        // A commit that is complete in the snapshot cannot change: no request at all.
        if (HubModelId.IsCommitHash(revision) && TryFromCache(cache, revision, variant, out ResolvedModel? cached, out _))
        {
            return cached!;
        }

        using var client = new HubClient(hub);
        HubRevisionInfo info;
        try
        {
            info = await client.GetRevisionAsync(id, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && HubClient.IsTransient(ex))
        {
            return FromCache(cache, variant, offlineReason: $"the Hub at {hub.Endpoint} cannot be reached ({ex.Message})");
        }

        var download = new SnapshotDownload(client, cache, id, info, progress);
        try
        {
            return await download.RunAsync(variant, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && HubClient.IsTransient(ex))
        {
            throw new ModelLoadException($"{id}: the Hub at {hub.Endpoint} failed during the download ({ex.Message}); run again to resume it.", ex);
        }
    }

    /// <summary>The cached snapshot of the id's revision, or a <see cref="ModelLoadException"/> saying what is missing.</summary>
    private static ResolvedModel FromCache(HubCache cache, string? variant, string offlineReason)
    {
        string revision = cache.Id.RevisionOrDefault;
        string? commit = cache.ResolveRevision(revision);
        if (commit is null)
        {
            throw new ModelLoadException(
                $"{cache.Id}: revision '{revision}' is not in the cache {cache.CacheDir} (no {Path.Combine(cache.RepoFolder, "refs", revision)}), and {offlineReason}; download it once online, or name a commit hash that is cached.");
        }

        if (!TryFromCache(cache, commit, variant, out ResolvedModel? model, out string? missing))
        {
            throw new ModelLoadException($"{cache.Id}: the cached snapshot {cache.SnapshotFolder(commit)} is incomplete ({missing}), and {offlineReason}.");
        }

        return model!;
    }

    private static bool TryFromCache(HubCache cache, string commit, string? variant, out ResolvedModel? model, out string? missing)
    {
        model = null;
        string folder = cache.SnapshotFolder(commit);
        IReadOnlySet<string> files = cache.SnapshotFiles(commit);
        if (!files.Contains(PipelineFiles.ModelIndexFile))
        {
            missing = Directory.Exists(folder) ? $"no {PipelineFiles.ModelIndexFile}" : "the snapshot folder does not exist";
            return false;
        }

        try
        {
            foreach (string file in PipelineFiles.Select(files, Path.Combine(folder, PipelineFiles.ModelIndexFile), variant, folder))
            {
                if (WeightsLocator.IsShardIndex(file))
                {
                    PipelineFiles.Shards(file, cache.SnapshotFile(commit, file), files, folder);
                }
            }
        }
        catch (ModelLoadException ex)
        {
            missing = ex.Message;
            return false;
        }

        missing = null;
        model = new ResolvedModel(folder, cache.Id.RepoId, cache.Id, commit);
        return true;
    }
}
