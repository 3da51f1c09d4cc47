namespace VqDiffusion.Server.Queue;

/// <summary>A failure inside the model while running a request (reported as INTERNAL).</summary>
public sealed class GenerationFailedException : Exception
{
    public GenerationFailedException(string requestId, Exception inner)
        : base($"generation failed inside the model (request id {requestId}); see the server log", inner)
    {
        RequestId = requestId;
    }

    public string RequestId { get; }
}
