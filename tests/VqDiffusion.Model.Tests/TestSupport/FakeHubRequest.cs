namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>One request a <see cref="FakeHubServer"/> received.</summary>
public sealed record FakeHubRequest(string Method, string Path, string Port, string? Range, string? Authorization);
