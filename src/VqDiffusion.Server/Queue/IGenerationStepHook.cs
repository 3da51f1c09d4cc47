namespace VqDiffusion.Server.Queue;

/// <summary>
/// Called on the model thread before each denoising step of a run (e.g. to observe the interleaving, or to inject a
/// failure in tests). An exception thrown here fails that run alone, as a failure inside the model would.
/// </summary>
public interface IGenerationStepHook
{
    void BeforeStep(string requestId, int completedSteps, int totalSteps);
}
