using System.Collections.Concurrent;
using VqDiffusion.Server.Queue;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// A step hook that throws the exception registered for a request id when that request reaches a step, as a failure
/// inside the model would (an exception thrown by a hook fails that run alone).
/// </summary>
public sealed class FaultHook : IGenerationStepHook
{
    private readonly ConcurrentDictionary<string, (int AtStep, Func<Exception> Fault)> _faults = new();

    public void Inject(string requestId, int atStep, Func<Exception> fault) => _faults[requestId] = (atStep, fault);

    public void BeforeStep(string requestId, int completedSteps, int totalSteps)
    {
        if (_faults.TryGetValue(requestId, out var f) && completedSteps == f.AtStep)
        {
            throw f.Fault();
        }
    }
}
