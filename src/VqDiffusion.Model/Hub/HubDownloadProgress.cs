namespace VqDiffusion.Model.Hub;

/// <summary>Progress of resolving a Hub model: one report when a file starts, as its bytes arrive, and when it is done.</summary>
/// <param name="RepoPath">The file (repository path).</param>
/// <param name="FileNumber">1-based number of the file among <paramref name="FileCount"/> to download.</param>
/// <param name="FileCount">Files that must be downloaded (files already in the cache are not counted).</param>
/// <param name="BytesDone">Bytes of this file present so far (a resumed download starts above 0).</param>
/// <param name="BytesTotal">The file's size.</param>
/// <param name="Completed">True once the file is downloaded and verified.</param>
public sealed record HubDownloadProgress(string RepoPath, int FileNumber, int FileCount, long BytesDone, long BytesTotal, bool Completed);
