namespace VqDiffusion.Server.Services;

/// <summary>
/// Awaited by <see cref="ModelHost"/> before it loads the model. The default opens at once; a host
/// can hold loading back (e.g. until a volume is mounted), and tests use it to observe NOT_SERVING.
/// </summary>
public interface IModelLoadGate
{
    Task WaitAsync(CancellationToken cancellationToken);
}

/// <summary>The default gate: loading starts immediately.</summary>
public sealed class OpenModelLoadGate : IModelLoadGate
{
    public Task WaitAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
