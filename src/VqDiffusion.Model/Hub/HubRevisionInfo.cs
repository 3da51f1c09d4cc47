namespace VqDiffusion.Model.Hub;

/// <summary>The answer of <c>GET {endpoint}/api/models/{repo}/revision/{revision}</c>: the commit and the repository's files.</summary>
public sealed record HubRevisionInfo(string CommitHash, IReadOnlyList<string> Files);
