using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Hub;

/// <summary>
/// One repository's folder in the Hugging Face cache, in huggingface_hub's layout (so a cache filled by Python is used
/// as is, and one filled here is usable by Python):
/// <code>
/// {cache}/models--org--name/blobs/{etag}                      file contents, named by their ETag (sha256 for LFS files)
/// {cache}/models--org--name/blobs/{etag}.incomplete           a partial download, resumed with a Range request
/// {cache}/models--org--name/snapshots/{commit}/{path}         relative symlinks to ../../blobs/{etag}
/// {cache}/models--org--name/refs/{revision}                   the commit hash a branch or tag pointed to
/// {cache}/.locks/models--org--name/{etag}.lock                held while a blob is downloaded
/// </code>
/// </summary>
public sealed class HubCache
{
    public HubCache(string cacheDir, HubModelId id)
    {
        ArgumentNullException.ThrowIfNull(id);
        CacheDir = Path.GetFullPath(cacheDir);
        Id = id;
        RepoFolder = Path.Combine(CacheDir, id.CacheFolderName);
    }

    public string CacheDir { get; }

    public HubModelId Id { get; }

    /// <summary><c>{cache}/models--org--name</c>.</summary>
    public string RepoFolder { get; }

    public string BlobPath(string etag) => Path.Combine(RepoFolder, "blobs", CheckName(etag, "etag"));

    public string IncompletePath(string etag) => BlobPath(etag) + ".incomplete";

    public string LockPath(string etag) => Path.Combine(CacheDir, ".locks", Id.CacheFolderName, CheckName(etag, "etag") + ".lock");

    public string SnapshotFolder(string commitHash) => Path.Combine(RepoFolder, "snapshots", CheckName(commitHash, "commit hash"));

    /// <summary>A file of a snapshot (<paramref name="repoPath"/> with <c>/</c> separators).</summary>
    public string SnapshotFile(string commitHash, string repoPath) =>
        Path.Combine(SnapshotFolder(commitHash), Path.Combine(SplitRepoPath(repoPath)));

    /// <summary>The commit a revision resolves to from the cache alone: itself when it is a commit hash, else <c>refs/{revision}</c>.</summary>
    public string? ResolveRevision(string revision)
    {
        if (HubModelId.IsCommitHash(revision))
        {
            return revision;
        }

        string path = RefPath(revision);
        if (!File.Exists(path))
        {
            return null;
        }

        string commit = File.ReadAllText(path).Trim();
        return HubModelId.IsCommitHash(commit) ? commit : throw new ModelLoadException($"{path}: not a commit hash ('{commit}').");
    }

    /// <summary>huggingface_hub's <c>_cache_commit_hash_for_specific_revision</c>: records refs/{revision} unless it is the commit itself.</summary>
    public void WriteRef(string revision, string commitHash)
    {
        if (revision == commitHash)
        {
            return;
        }

        string path = RefPath(revision);
        if (File.Exists(path) && File.ReadAllText(path).Trim() == commitHash)
        {
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, commitHash);
    }

    /// <summary>
    /// Points <c>snapshots/{commit}/{path}</c> at <c>blobs/{etag}</c> with a relative symlink (huggingface_hub's
    /// <c>_create_symlink</c>); a copy where the file system has no symlinks.
    /// </summary>
    public void Link(string commitHash, string repoPath, string etag)
    {
        string blob = BlobPath(etag);
        string pointer = SnapshotFile(commitHash, repoPath);
        Directory.CreateDirectory(Path.GetDirectoryName(pointer)!);
        if (File.Exists(pointer) || new FileInfo(pointer).LinkTarget is not null)
        {
            File.Delete(pointer);
        }

        try
        {
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(Path.GetDirectoryName(pointer)!, blob));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            File.Copy(blob, pointer, overwrite: true);
        }
    }

    /// <summary>The files of a snapshot (repository paths with <c>/</c>) whose contents are present (dangling links are left out).</summary>
    public IReadOnlySet<string> SnapshotFiles(string commitHash)
    {
        string folder = SnapshotFolder(commitHash);
        var files = new HashSet<string>(StringComparer.Ordinal);
        if (!Directory.Exists(folder))
        {
            return files;
        }

        foreach (string path in Directory.EnumerateFiles(folder, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            if (File.Exists(path) && (new FileInfo(path).LinkTarget is null || File.ResolveLinkTarget(path, returnFinalTarget: true)?.Exists == true))
            {
                files.Add(Path.GetRelativePath(folder, path).Replace(Path.DirectorySeparatorChar, '/'));
            }
        }

        return files;
    }

    private string RefPath(string revision) => Path.Combine(RepoFolder, "refs", Path.Combine(SplitRepoPath(revision)));

    /// <summary>Splits a repository path at <c>/</c>, refusing empty, <c>.</c> and <c>..</c> segments (no escape from the cache).</summary>
    internal static string[] SplitRepoPath(string repoPath)
    {
        string[] parts = repoPath.Split('/');
        if (parts.Any(p => p.Length == 0 || p is "." or ".." || p.Contains('\\', StringComparison.Ordinal)))
        {
            throw new ModelLoadException($"'{repoPath}': not a valid path inside a repository.");
        }

        return parts;
    }

    private static string CheckName(string name, string what) =>
        name.Length == 0 || name.Contains('/', StringComparison.Ordinal) || name.Contains('\\', StringComparison.Ordinal) || name is "." or ".."
            ? throw new ModelLoadException($"'{name}': not a valid {what}.")
            : name;
}
