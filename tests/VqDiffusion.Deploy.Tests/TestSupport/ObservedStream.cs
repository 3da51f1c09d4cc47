using Grpc.Core;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>A Generate call read to its end: the replica that served it, its messages, and how it ended.</summary>
public sealed class ObservedStream
{
    public const string InstanceHeader = "vqd-instance-id";

    private readonly TaskCompletionSource<string?> _firstProgress = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<string?> _headers = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string? ServedBy { get; private set; }

    public List<GenerateResponse> Events { get; } = [];

    public RpcException? Error { get; private set; }

    public bool Completed => Error is null && Events.Count > 0 && Events[^1].EventCase == GenerateResponse.EventOneofCase.Completed;

    /// <summary>Completes (with <see cref="ServedBy"/>) when the response headers arrive (the request was accepted), or when the call ends without them.</summary>
    public Task<string?> Headers => _headers.Task;

    /// <summary>Completes (with <see cref="ServedBy"/>) at the first progress event, or when the call ends without one.</summary>
    public Task<string?> FirstProgress => _firstProgress.Task;

    /// <summary>Starts <paramref name="request"/> and reads it in the background.</summary>
    public static (ObservedStream Stream, Task Done) Start(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request, CancellationToken cancellationToken = default)
    {
        var observed = new ObservedStream();
        return (observed, observed.ReadAsync(client, request, cancellationToken));
    }

    public static async Task<ObservedStream> RunAsync(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request, CancellationToken cancellationToken = default)
    {
        var observed = new ObservedStream();
        await observed.ReadAsync(client, request, cancellationToken);
        return observed;
    }

    /// <summary>The stream without what depends on timing or load (queue positions and durations).</summary>
    public static GenerateResponse[] Comparable(IEnumerable<GenerateResponse> events) => events
        .Where(e => e.EventCase != GenerateResponse.EventOneofCase.Queued)
        .Select(e =>
        {
            GenerateResponse c = e.Clone();
            switch (c.EventCase)
            {
                case GenerateResponse.EventOneofCase.Started:
                    c.Started.QueueWait = null;
                    break;
                case GenerateResponse.EventOneofCase.Progress:
                    c.Progress.Elapsed = null;
                    break;
                case GenerateResponse.EventOneofCase.Completed:
                    c.Completed = new CompletedEvent { NumImages = e.Completed.NumImages };
                    break;
            }

            return c;
        })
        .ToArray();

    private async Task ReadAsync(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request, CancellationToken cancellationToken)
    {
        try
        {
            using AsyncServerStreamingCall<GenerateResponse> call = client.Generate(request, cancellationToken: cancellationToken);
            Metadata headers = await call.ResponseHeadersAsync;
            ServedBy = headers.GetValue(InstanceHeader);
            _headers.TrySetResult(ServedBy);
            while (await call.ResponseStream.MoveNext(cancellationToken))
            {
                Events.Add(call.ResponseStream.Current);
                if (call.ResponseStream.Current.EventCase == GenerateResponse.EventOneofCase.Progress)
                {
                    _firstProgress.TrySetResult(ServedBy);
                }
            }
        }
        catch (RpcException ex)
        {
            Error = ex;
            ServedBy ??= ex.Trailers.GetValue(InstanceHeader);
        }
        finally
        {
            _headers.TrySetResult(ServedBy);
            _firstProgress.TrySetResult(ServedBy);
        }
    }
}
