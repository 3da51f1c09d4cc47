using System.Diagnostics;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Telemetry;

/// <summary>
/// The <see cref="ActivitySource"/> <c>VqDiffusion.Server</c> and the helpers that start its spans. A call's span
/// (<c>Generate</c>) is a child of the ASP.NET Core request activity, itself made from the incoming
/// <c>traceparent</c> metadata; the spans of its job (<c>queue</c>, <c>encode</c>, <c>denoise</c> with one
/// <c>step</c> event per step, <c>decode</c>) are children of the call's span. Spans that the model thread starts
/// and stops never change its <see cref="Activity.Current"/>.
/// </summary>
public static class ServerTracing
{
    public const string SourceName = "VqDiffusion.Server";

    public static ActivitySource Source { get; } = new(SourceName, VqDiffusionGrpcService.ServerVersion);

    /// <summary>
    /// Starts a span under <paramref name="parent"/> (optionally back-dated by <paramref name="elapsed"/>) and leaves
    /// <see cref="Activity.Current"/> as it was; null when nobody listens.
    /// </summary>
    public static Activity? StartDetached(string name, ActivityContext parent, TimeSpan elapsed = default)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        Activity? previous = Activity.Current;
        DateTimeOffset start = elapsed > TimeSpan.Zero ? DateTimeOffset.UtcNow - elapsed : default;
        Activity? activity = Source.StartActivity(name, ActivityKind.Internal, parent, startTime: start);
        Activity.Current = previous;
        return activity;
    }

    /// <summary>Stops <paramref name="activity"/> (optionally <paramref name="endedAgo"/> in the past) and leaves <see cref="Activity.Current"/> as it was.</summary>
    public static void StopDetached(Activity? activity, TimeSpan endedAgo = default)
    {
        if (activity is null)
        {
            return;
        }

        Activity? previous = Activity.Current;
        if (endedAgo > TimeSpan.Zero)
        {
            activity.SetEndTime(DateTime.UtcNow - endedAgo);
        }

        activity.Stop();
        Activity.Current = previous;
    }

    /// <summary>A completed span from <paramref name="elapsed"/> ago until now.</summary>
    public static void RecordCompleted(string name, ActivityContext parent, TimeSpan elapsed, params (string Key, object? Value)[] tags)
    {
        Activity? activity = StartDetached(name, parent, elapsed);
        if (activity is null)
        {
            return;
        }

        foreach ((string key, object? value) in tags)
        {
            activity.SetTag(key, value);
        }

        StopDetached(activity);
    }
}
