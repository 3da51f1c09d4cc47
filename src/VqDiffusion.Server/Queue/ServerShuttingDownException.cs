namespace VqDiffusion.Server.Queue;

/// <summary>The server is shutting down: a request is not admitted, leaves the queue, or stops at a step boundary (UNAVAILABLE).</summary>
public sealed class ServerShuttingDownException : Exception
{
    public const string DefaultMessage = "the server is shutting down; retry on another instance or after the restart";

    public ServerShuttingDownException()
        : base(DefaultMessage)
    {
    }

    public ServerShuttingDownException(string message)
        : base(message)
    {
    }
}
