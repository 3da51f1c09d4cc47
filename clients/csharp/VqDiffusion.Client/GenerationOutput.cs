namespace VqDiffusion.Client;

/// <summary>The result of <see cref="VqDiffusionClient.GenerateImagesAsync"/>.</summary>
/// <param name="Seed">The seed the server used (the request's or a random one).</param>
/// <param name="Images">The images in batch order (prompt 0's images, then prompt 1's, ...).</param>
/// <param name="Started">The resolved parameters of the request.</param>
/// <param name="Completed">The server's timings.</param>
public sealed record GenerationOutput(
    ulong Seed,
    IReadOnlyList<GenerationEvent.ImageGenerated> Images,
    GenerationEvent.Started Started,
    GenerationEvent.Completed Completed);

/// <summary>Progress reported by <see cref="VqDiffusionClient.GenerateImagesAsync"/>.</summary>
/// <param name="Stage">What the request is doing.</param>
/// <param name="CompletedSteps">Denoising steps done.</param>
/// <param name="TotalSteps">Denoising steps in total (0 while queued).</param>
/// <param name="Timestep">The timestep just denoised (-1 before the first step).</param>
/// <param name="QueuePosition">1-based queue position while <see cref="GenerationStage.Queued"/>, else 0.</param>
/// <param name="Elapsed">Time since generation started on the server.</param>
public sealed record GenerationProgress(
    GenerationStage Stage,
    int CompletedSteps,
    int TotalSteps,
    long Timestep,
    int QueuePosition,
    TimeSpan Elapsed);

/// <summary>The stage of a request.</summary>
public enum GenerationStage
{
    /// <summary>Waiting in the server's queue.</summary>
    Queued,

    /// <summary>Generation started (no step done yet).</summary>
    Started,

    /// <summary>Denoising.</summary>
    Denoising,

    /// <summary>All images received.</summary>
    Completed,
}
