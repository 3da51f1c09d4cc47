using Grpc.Core;

namespace VqDiffusion.Client;

/// <summary>
/// How <see cref="VqDiffusionClient"/> retries a call that failed with a retryable status (by default UNAVAILABLE:
/// no replica, a replica that stopped, a model still loading; and RESOURCE_EXHAUSTED: a full queue). The delay before
/// retry n (1-based) is <c>min(MaxBackoff, InitialBackoff · BackoffMultiplier^(n−1))</c>, spread by ±<see cref="Jitter"/>.
/// Behind a load balancer (nginx, a Kubernetes Service, <see cref="VqDiffusionClient.ForAddresses"/>) a retry usually
/// reaches another replica.
/// </summary>
public sealed class VqDiffusionRetryOptions
{
    /// <summary>No retries: every failure is thrown at once.</summary>
    public static VqDiffusionRetryOptions None => new() { MaxAttempts = 1 };

    /// <summary>Attempts in all, the first included; 1 = no retries. Default 3.</summary>
    public int MaxAttempts { get; set; } = 3;

    /// <summary>Delay before the first retry. Default 250 ms.</summary>
    public TimeSpan InitialBackoff { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Largest delay between two attempts. Default 5 s.</summary>
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Factor between two consecutive delays. Default 2.</summary>
    public double BackoffMultiplier { get; set; } = 2;

    /// <summary>Relative random spread of each delay, 0..1 (0.2 = ±20 %). Default 0.2.</summary>
    public double Jitter { get; set; } = 0.2;

    /// <summary>
    /// Status codes that are retried. Default UNAVAILABLE and RESOURCE_EXHAUSTED. A stream reset on the way (HTTP/2
    /// RST_STREAM, reported by grpc-dotnet as INTERNAL with the transport's exception and no status from the server) is
    /// a lost connection and counts as UNAVAILABLE: that is what a proxy such as nginx sends when the replica of a
    /// started stream dies.
    /// </summary>
    public IReadOnlyCollection<StatusCode> RetryableStatusCodes { get; set; } = [StatusCode.Unavailable, StatusCode.ResourceExhausted];

    /// <summary>
    /// Whether a Generate stream that fails after some of its events arrived is run again. Off by default: the
    /// caller has already seen events of a run that is now lost. <c>Queued</c> events do not count: a stream that
    /// fails while only queued (a replica that began to shut down ends its queue with UNAVAILABLE) is always retried,
    /// and its caller sees the queue positions of the next attempt after the first ones. When on, the request is sent again from the start
    /// (the stream restarts with <c>Queued</c>/<c>Started</c>; <see cref="VqDiffusionClient.GenerateImagesAsync"/> keeps only
    /// the last run's images) and, when the request had no seed, with the seed the failed run reported in
    /// <c>Started</c>, so the retried run makes the images the first one would have made.
    /// </summary>
    public bool RetryGenerateAfterEvents { get; set; }

    /// <summary>Called before each retry's delay (for logs or metrics); must not throw.</summary>
    public Action<RetryAttempt>? OnRetry { get; set; }

    internal void Validate()
    {
        if (MaxAttempts < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxAttempts), MaxAttempts, "at least 1 (1 = no retries)");
        }

        if (InitialBackoff < TimeSpan.Zero || MaxBackoff < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(InitialBackoff), "backoffs must not be negative");
        }

        if (!(BackoffMultiplier >= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(BackoffMultiplier), BackoffMultiplier, "at least 1");
        }

        if (!(Jitter >= 0 && Jitter <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Jitter), Jitter, "0..1");
        }

        ArgumentNullException.ThrowIfNull(RetryableStatusCodes);
    }

    /// <summary>INTERNAL made by the client's HTTP/2 stack (the stream was reset), not a status the server sent.</summary>
    internal static bool IsTransportReset(RpcException failure) =>
        failure.StatusCode == StatusCode.Internal && failure.Status.DebugException is System.Net.Http.HttpProtocolException or IOException;

    /// <summary>The delay before retrying after attempt <paramref name="attempt"/> failed, or null when it is not retried.</summary>
    internal TimeSpan? DelayAfter(int attempt, RpcException failure, bool afterEvents, DateTime? deadline)
    {
        StatusCode code = IsTransportReset(failure) ? StatusCode.Unavailable : failure.StatusCode;
        if (attempt >= MaxAttempts || !RetryableStatusCodes.Contains(code) || (afterEvents && !RetryGenerateAfterEvents))
        {
            return null;
        }

        double ms = Math.Min(MaxBackoff.TotalMilliseconds, InitialBackoff.TotalMilliseconds * Math.Pow(BackoffMultiplier, attempt - 1));
        ms *= 1 + (Jitter * ((2 * Random.Shared.NextDouble()) - 1));
        TimeSpan delay = TimeSpan.FromMilliseconds(Math.Max(0, ms));
        if (deadline is DateTime d && DateTime.UtcNow + delay >= d.ToUniversalTime())
        {
            return null; // the deadline would pass while waiting
        }

        return delay;
    }
}
