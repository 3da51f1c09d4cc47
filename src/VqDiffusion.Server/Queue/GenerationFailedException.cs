namespace VqDiffusion.Server.Queue;

/// <summary>
/// A failure inside the model while running a request: INTERNAL, or RESOURCE_EXHAUSTED when the model ran out of
/// memory (<see cref="OutOfMemoryFailures"/>). The message carries the request id and nothing of the exception
/// (paths, native stack traces); the worker logs the details once.
/// </summary>
public sealed class GenerationFailedException : Exception
{
    public GenerationFailedException(string requestId, Exception inner)
        : base(MessageFor(requestId, OutOfMemoryFailures.IsOutOfMemory(inner)), inner)
    {
        RequestId = requestId;
        IsOutOfMemory = OutOfMemoryFailures.IsOutOfMemory(inner);
    }

    public string RequestId { get; }

    /// <summary>The model ran out of CPU or GPU memory (reported as RESOURCE_EXHAUSTED).</summary>
    public bool IsOutOfMemory { get; }

    private static string MessageFor(string requestId, bool outOfMemory) => outOfMemory
        ? $"the server ran out of memory running request {requestId}; retry later, or with fewer images per request"
        : $"generation failed inside the model (request id {requestId}); see the server log";
}
