namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>The tests that start server processes and nginx run one class at a time, after the others.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ReplicaProcessesCollection
{
    public const string Name = "replica processes";
}
