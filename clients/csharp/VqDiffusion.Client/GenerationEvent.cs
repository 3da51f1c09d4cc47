namespace VqDiffusion.Client;

/// <summary>One event of a Generate stream, in stream order:
/// <see cref="Queued"/>* → <see cref="Started"/> → (<see cref="Progress"/>, <see cref="Snapshot"/>*)* →
/// <see cref="ImageGenerated"/>+ → <see cref="Completed"/>.</summary>
public abstract record GenerationEvent
{
    private protected GenerationEvent()
    {
    }

    /// <summary>The request waits in the server's queue (1-based <paramref name="Position"/>, 1 = next).</summary>
    public sealed record Queued(int Position, int QueueLength) : GenerationEvent;

    /// <summary>
    /// Generation started with these resolved parameters. <paramref name="TotalSteps"/> is the number of progress
    /// events (network calls), <paramref name="Timesteps"/> the timestep of each; the vq-diffusion sampler's speed and
    /// prior make them differ from <paramref name="NumInferenceSteps"/>.
    /// </summary>
    public sealed record Started(
        string RequestId,
        IReadOnlyList<string> Prompts,
        int NumInferenceSteps,
        float GuidanceScale,
        float TruncationRate,
        int NumImagesPerPrompt,
        ulong Seed,
        IReadOnlyList<long> Timesteps,
        int NumImages,
        VqDiffusion.Grpc.V1.ImageFormat ImageFormat,
        TimeSpan QueueWait,
        int TotalSteps = 0,
        VqDiffusion.Grpc.V1.SamplerKind Sampler = VqDiffusion.Grpc.V1.SamplerKind.Unspecified,
        double Speed = 1,
        VqDiffusion.Grpc.V1.UnmaskPrior Prior = VqDiffusion.Grpc.V1.UnmaskPrior.Unspecified,
        double? EditStrength = null) : GenerationEvent
    {
        /// <summary>Progress events to expect: <see cref="TotalSteps"/>, or the step count of servers that do not report it.</summary>
        public int ExpectedSteps => TotalSteps > 0 ? TotalSteps : NumInferenceSteps;
    }

    /// <summary>One denoising step finished.</summary>
    public sealed record Progress(int CompletedSteps, int TotalSteps, long Timestep, TimeSpan Elapsed) : GenerationEvent;

    /// <summary>The intermediate state of one image (only when requested with <c>GenerateRequest.Snapshots</c>).</summary>
    public sealed record Snapshot(
        int CompletedSteps,
        long Timestep,
        int ImageIndex,
        int Height,
        int Width,
        IReadOnlyList<int> Tokens,
        int MaskedCount,
        byte[]? Preview,
        string? PreviewMimeType) : GenerationEvent;

    /// <summary>A finished, encoded image; <paramref name="Index"/> is its prompt-major batch index.</summary>
    public sealed record ImageGenerated(int Index, int PromptIndex, byte[] Data, string MimeType, int Width, int Height, ulong Seed) : GenerationEvent;

    /// <summary>
    /// The request finished; the stream ends after this event. <paramref name="DroppedEvents"/>: progress and snapshot
    /// events the server left out because this client read more slowly than the model produced them (each replaced
    /// by a later one of the same kind and image); 0 when it kept up.
    /// </summary>
    public sealed record Completed(TimeSpan QueueWait, TimeSpan GenerationTime, TimeSpan MeanStepTime, TimeSpan DecodeTime, int NumImages, int DroppedEvents = 0) : GenerationEvent;
}
