namespace VqDiffusion.Server.Queue;

/// <summary>The bounded queue has no room for another request.</summary>
public sealed class QueueFullException : Exception
{
    public QueueFullException(int capacity)
        : base($"the request queue is full ({capacity} requests waiting); retry later")
    {
        Capacity = capacity;
    }

    public int Capacity { get; }
}
