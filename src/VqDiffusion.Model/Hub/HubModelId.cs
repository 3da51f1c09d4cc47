using System.Text.RegularExpressions;

namespace VqDiffusion.Model.Hub;

/// <summary>
/// A Hugging Face Hub model id with an optional revision: <c>org/name</c> or <c>org/name@revision</c> (a branch, a
/// tag or a 40-character commit hash; default <c>main</c>), validated like huggingface_hub's
/// <c>validate_repo_id</c>.
/// </summary>
public sealed partial record HubModelId(string RepoId, string? Revision)
{
    /// <summary>The revision used when none is given.</summary>
    public const string DefaultRevision = "main";

    /// <summary>The revision in effect: <see cref="Revision"/> or <c>main</c>.</summary>
    public string RevisionOrDefault => Revision ?? DefaultRevision;

    /// <summary>
    /// The repository's folder in the cache, huggingface_hub's <c>repo_folder_name</c>: <c>models--org--name</c>.
    /// </summary>
    public string CacheFolderName => "models--" + RepoId.Replace("/", "--", StringComparison.Ordinal);

    /// <summary>True for a full commit hash (huggingface_hub's <c>REGEX_COMMIT_HASH</c>, <c>^[0-9a-f]{40}$</c>).</summary>
    public static bool IsCommitHash(string revision) => CommitHashRegex().IsMatch(revision);

    /// <summary>
    /// Parses <c>org/name</c> or <c>org/name@revision</c>. Names are letters, digits, <c>-</c>, <c>_</c> and
    /// <c>.</c>, at most 96 characters, without <c>--</c> or <c>..</c> and not starting or ending with <c>-</c> or
    /// <c>.</c>; the revision is non-empty and has no whitespace.
    /// </summary>
    public static bool TryParse(string? value, out HubModelId id)
    {
        id = null!;
        if (string.IsNullOrWhiteSpace(value))
        {
            return false;
        }

        string repo = value;
        string? revision = null;
        int at = value.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            repo = value[..at];
            revision = value[(at + 1)..];
            if (revision.Length == 0 || revision.Any(char.IsWhiteSpace) || revision.Contains("..", StringComparison.Ordinal))
            {
                return false;
            }
        }

        if (repo.Length > 96 || !RepoIdRegex().IsMatch(repo) || repo.Contains("--", StringComparison.Ordinal) || repo.Contains("..", StringComparison.Ordinal))
        {
            return false;
        }

        id = new HubModelId(repo, revision);
        return true;
    }

    public override string ToString() => Revision is null ? RepoId : $"{RepoId}@{Revision}";

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitHashRegex();

    [GeneratedRegex(@"^[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?/[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?$")]
    private static partial Regex RepoIdRegex();
}
