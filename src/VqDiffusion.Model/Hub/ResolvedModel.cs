namespace VqDiffusion.Model.Hub;

/// <summary>A model folder ready to load: the folder itself, or the cache snapshot of a Hub model id.</summary>
/// <param name="LocalPath">The folder to load (absolute).</param>
/// <param name="Name">The Hub repository id (<c>org/name</c>), or the folder's name.</param>
/// <param name="HubId">The id as given (with its revision), null for a folder.</param>
/// <param name="CommitHash">The commit the Hub revision resolved to, null for a folder.</param>
public sealed record ResolvedModel(string LocalPath, string Name, HubModelId? HubId, string? CommitHash)
{
    public bool IsHubModel => HubId is not null;

    /// <summary><c>org/name@main (commit 0123456789ab)</c>, or the folder.</summary>
    public string Description => HubId is null ? LocalPath : $"{HubId.RepoId}@{HubId.RevisionOrDefault} (commit {CommitHash?[..Math.Min(12, CommitHash.Length)]})";
}
