using System.Threading.Channels;
using Grpc.Core;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>
/// A Generate call whose stream is read continuously in the background (so flow control never
/// stalls the server), with a way to wait for a particular event.
/// </summary>
public sealed class DrainedCall : IDisposable
{
    private readonly AsyncServerStreamingCall<GenerateResponse> _call;
    private readonly CancellationTokenSource _cts = new();
    private readonly Channel<GenerateResponse> _events = Channel.CreateUnbounded<GenerateResponse>();
    private readonly Task _reader;

    public DrainedCall(VqDiffusionService.VqDiffusionServiceClient client, GenerateRequest request, DateTime? deadline = null)
    {
        _call = client.Generate(request, deadline: deadline, cancellationToken: _cts.Token);
        _reader = Task.Run(async () =>
        {
            try
            {
                await foreach (GenerateResponse e in _call.ResponseStream.ReadAllAsync())
                {
                    _events.Writer.TryWrite(e);
                }

                _events.Writer.TryComplete();
            }
            catch (Exception ex)
            {
                _events.Writer.TryComplete(ex);
            }
        });
    }

    /// <summary>Waits (at most a minute) for the next event that matches.</summary>
    public async Task<GenerateResponse> WaitForAsync(Func<GenerateResponse, bool> predicate)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        while (await _events.Reader.WaitToReadAsync(timeout.Token))
        {
            while (_events.Reader.TryRead(out GenerateResponse? e))
            {
                if (predicate(e))
                {
                    return e;
                }
            }
        }

        throw new InvalidOperationException("the stream ended before the expected event");
    }

    /// <summary>Waits for the stream to end; throws the call's RpcException if it failed.</summary>
    public async Task<List<GenerateResponse>> ReadToEndAsync()
    {
        var rest = new List<GenerateResponse>();
        await foreach (GenerateResponse e in _events.Reader.ReadAllAsync())
        {
            rest.Add(e);
        }

        return rest;
    }

    public void Cancel() => _cts.Cancel();

    public void Dispose()
    {
        _cts.Cancel();
        _call.Dispose();
        _cts.Dispose();
    }
}
