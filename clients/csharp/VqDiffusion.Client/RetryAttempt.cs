using Grpc.Core;

namespace VqDiffusion.Client;

/// <summary>A failed attempt that <see cref="VqDiffusionClient"/> is about to retry.</summary>
/// <param name="Method">The RPC: <c>Generate</c> or <c>GetModelInfo</c>.</param>
/// <param name="Attempt">The failed attempt, 1-based.</param>
/// <param name="StatusCode">Its status code.</param>
/// <param name="Detail">Its status message.</param>
/// <param name="Delay">The wait before the next attempt.</param>
/// <param name="AfterEvents">True when the failed Generate stream had delivered events (see <see cref="VqDiffusionRetryOptions.RetryGenerateAfterEvents"/>).</param>
public sealed record RetryAttempt(string Method, int Attempt, StatusCode StatusCode, string Detail, TimeSpan Delay, bool AfterEvents);
