using Grpc.Core;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// A Generate call read in the background that appends <c>name:event</c> (queued, started, completed, ended:CODE) to a
/// log shared by several calls, so that tests can check the order in which things happened across streams.
/// </summary>
public sealed class TrackedCall : IDisposable
{
    private readonly AsyncServerStreamingCall<GenerateResponse> _call;
    private readonly CancellationTokenSource _cts = new();
    private readonly List<string> _log;
    private readonly string _name;

    public TrackedCall(VqDiffusionService.VqDiffusionServiceClient client, string name, GenerateRequest request, List<string> log, Metadata? headers = null)
    {
        _name = name;
        _log = log;
        _call = client.Generate(request, headers, cancellationToken: _cts.Token);
        Ended = Task.Run(ReadAsync);
    }

    /// <summary>The call's final status (OK when it completed).</summary>
    public Task<Status> Ended { get; }

    public void Cancel()
    {
        Add("cancel");
        _cts.Cancel();
    }

    /// <summary>Waits (at most a minute) until the shared log has <paramref name="entry"/>.</summary>
    public static async Task WaitForAsync(List<string> log, string entry)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        while (!Has(log, entry))
        {
            await Task.Delay(10, timeout.Token);
        }
    }

    public static bool Has(List<string> log, string entry)
    {
        lock (log)
        {
            return log.Contains(entry);
        }
    }

    public static int IndexOf(List<string> log, string entry)
    {
        lock (log)
        {
            int i = log.IndexOf(entry);
            return i >= 0 ? i : throw new InvalidOperationException($"'{entry}' is not in the log: {string.Join(", ", log)}");
        }
    }

    public void Dispose()
    {
        _cts.Cancel();
        _call.Dispose();
        _cts.Dispose();
    }

    private async Task<Status> ReadAsync()
    {
        try
        {
            await foreach (GenerateResponse e in _call.ResponseStream.ReadAllAsync())
            {
                switch (e.EventCase)
                {
                    case GenerateResponse.EventOneofCase.Queued:
                        Add("queued");
                        break;
                    case GenerateResponse.EventOneofCase.Started:
                        Add("started");
                        break;
                    case GenerateResponse.EventOneofCase.Progress when e.Progress.CompletedSteps == 1:
                        Add("progress");
                        break;
                    case GenerateResponse.EventOneofCase.Completed:
                        Add("completed");
                        break;
                }
            }

            Add("ended:OK");
            return Status.DefaultSuccess;
        }
        catch (RpcException ex)
        {
            Add("ended:" + ex.StatusCode);
            return ex.Status;
        }
        catch (OperationCanceledException)
        {
            Add("ended:Cancelled");
            return new Status(StatusCode.Cancelled, "cancelled");
        }
    }

    private void Add(string what)
    {
        lock (_log)
        {
            _log.Add($"{_name}:{what}");
        }
    }
}
