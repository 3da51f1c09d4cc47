namespace VqDiffusion.Server.Queue;

/// <summary>
/// A request finds no room: the queue is full (<c>Generation:MaxQueueLength</c>) or its caller already has its share
/// waiting (<c>Generation:MaxQueuedPerCaller</c>). Reported as RESOURCE_EXHAUSTED with this message, which names the limit.
/// </summary>
public sealed class QueueFullException : Exception
{
    public QueueFullException(int capacity)
        : this("Generation:MaxQueueLength", capacity, $"the request queue is full ({capacity} requests waiting, Generation:MaxQueueLength); retry later")
    {
    }

    public QueueFullException(string limit, int capacity, string message)
        : base(message)
    {
        Limit = limit;
        Capacity = capacity;
    }

    /// <summary>The configuration key of the limit that was reached.</summary>
    public string Limit { get; }

    /// <summary>Its value.</summary>
    public int Capacity { get; }

    /// <summary>A caller has <paramref name="limit"/> requests waiting already.</summary>
    public static QueueFullException ForCaller(string caller, int limit) =>
        new("Generation:MaxQueuedPerCaller", limit, $"caller {caller} has reached Generation:MaxQueuedPerCaller ({limit} waiting); retry when one has started");
}
