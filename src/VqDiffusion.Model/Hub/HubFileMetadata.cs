namespace VqDiffusion.Model.Hub;

/// <summary>
/// What the Hub says about one file (huggingface_hub's <c>HfFileMetadata</c>): the commit (<c>X-Repo-Commit</c>), the
/// normalised ETag (<c>X-Linked-Etag</c> for LFS files, their sha256; else <c>ETag</c>, the git blob id), the size
/// (<c>X-Linked-Size</c> or <c>Content-Length</c>) and where to download it (<c>Location</c> of a redirect, else the
/// resolve URL).
/// </summary>
public sealed record HubFileMetadata(string RepoPath, string CommitHash, string Etag, long Size, Uri Location);
