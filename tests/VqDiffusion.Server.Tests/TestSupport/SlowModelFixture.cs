using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>One <see cref="SlowModel"/> folder (64×64 latent grid, steps of about a second on a CPU) for a test class.</summary>
public sealed class SlowModelFixture : IDisposable
{
    private readonly TempDirectory _dir = new();

    public SlowModelFixture()
    {
        Path = System.IO.Path.Combine(_dir.FullName, "slow-64");
        SlowModel.Write(Path);
    }

    public string Path { get; }

    public void Dispose() => _dir.Dispose();
}
