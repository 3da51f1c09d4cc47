namespace VqDiffusion.Server.Queue;

/// <summary>
/// Recognises an out-of-memory failure: a managed <see cref="OutOfMemoryException"/>, or libtorch's allocator errors
/// as TorchSharp surfaces them (an exception whose message starts with the C++ error text), on the CPU
/// ("DefaultCPUAllocator: can't allocate memory") or CUDA ("CUDA out of memory", "CUDA error: out of memory",
/// "CUBLAS_STATUS_ALLOC_FAILED"), anywhere in the chain of inner exceptions.
/// </summary>
public static class OutOfMemoryFailures
{
    private static readonly string[] Markers =
    [
        "DefaultCPUAllocator: can't allocate memory",
        "CUDA out of memory",
        "CUDA error: out of memory",
        "CUBLAS_STATUS_ALLOC_FAILED",
    ];

    public static bool IsOutOfMemory(Exception? exception)
    {
        for (Exception? e = exception; e is not null; e = e.InnerException)
        {
            string message = e.Message;
            if (e is OutOfMemoryException || Markers.Any(m => message.Contains(m, StringComparison.Ordinal)))
            {
                return true;
            }

            if (e is AggregateException aggregate && aggregate.InnerExceptions.Any(IsOutOfMemory))
            {
                return true;
            }
        }

        return false;
    }
}
