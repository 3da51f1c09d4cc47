using System.Runtime.CompilerServices;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Net.Client;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Client;

/// <summary>
/// Client of the VqDiffusion.Grpc service. Failed calls throw <see cref="VqDiffusionException"/>;
/// a cancelled <see cref="CancellationToken"/> throws <see cref="OperationCanceledException"/>.
/// </summary>
public sealed class VqDiffusionClient : IDisposable
{
    /// <summary>The receive limit of channels the client creates (images can be large).</summary>
    public const int DefaultMaxReceiveMessageSize = 64 * 1024 * 1024;

    private readonly GrpcChannel _channel;
    private readonly bool _ownsChannel;
    private readonly VqDiffusionService.VqDiffusionServiceClient _client;

    /// <summary>Connects to <paramref name="address"/> (<c>http://host:port</c>, or https).</summary>
    /// <param name="address">The server's address.</param>
    /// <param name="options">Channel options; null = <see cref="DefaultMaxReceiveMessageSize"/> receive limit.</param>
    public VqDiffusionClient(string address, GrpcChannelOptions? options = null)
        : this(GrpcChannel.ForAddress(address, options ?? new GrpcChannelOptions { MaxReceiveMessageSize = DefaultMaxReceiveMessageSize }), ownsChannel: true)
    {
    }

    /// <summary>Connects to <paramref name="address"/> (<c>http://host:port</c>, or https).</summary>
    public VqDiffusionClient(Uri address, GrpcChannelOptions? options = null)
        : this(GrpcChannel.ForAddress(address, options ?? new GrpcChannelOptions { MaxReceiveMessageSize = DefaultMaxReceiveMessageSize }), ownsChannel: true)
    {
    }

    /// <summary>Uses an existing channel; it is disposed with the client only when <paramref name="ownsChannel"/> is true.</summary>
    public VqDiffusionClient(GrpcChannel channel, bool ownsChannel = false)
    {
        ArgumentNullException.ThrowIfNull(channel);
        _channel = channel;
        _ownsChannel = ownsChannel;
        _client = new VqDiffusionService.VqDiffusionServiceClient(channel);
    }

    /// <summary>The channel the client calls through.</summary>
    public GrpcChannel Channel => _channel;

    /// <summary>Describes the served model, its defaults and limits.</summary>
    public async Task<GetModelInfoResponse> GetModelInfoAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            using var call = _client.GetModelInfoAsync(new GetModelInfoRequest(), cancellationToken: cancellationToken);
            return await call.ResponseAsync.ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            throw Translate(ex, cancellationToken);
        }
    }

    /// <summary>Runs <paramref name="request"/> and yields the stream's events as they arrive.</summary>
    /// <param name="request">The request.</param>
    /// <param name="cancellationToken">Cancels the call on the server; the enumeration then throws <see cref="OperationCanceledException"/>.</param>
    /// <param name="deadline">Optional gRPC deadline (UTC); when it passes the call fails with DEADLINE_EXCEEDED.</param>
    public async IAsyncEnumerable<GenerationEvent> GenerateAsync(
        GenerateRequest request,
        [EnumeratorCancellation] CancellationToken cancellationToken = default,
        DateTime? deadline = null)
    {
        ArgumentNullException.ThrowIfNull(request);
        cancellationToken.ThrowIfCancellationRequested();
        using AsyncServerStreamingCall<GenerateResponse> call = _client.Generate(request, deadline: deadline, cancellationToken: cancellationToken);
        IAsyncStreamReader<GenerateResponse> stream = call.ResponseStream;
        while (true)
        {
            GenerationEvent? next;
            try
            {
                if (!await stream.MoveNext(cancellationToken).ConfigureAwait(false))
                {
                    yield break;
                }

                next = Convert(stream.Current);
            }
            catch (RpcException ex)
            {
                throw Translate(ex, cancellationToken);
            }

            if (next is not null)
            {
                yield return next;
            }
        }
    }

    /// <summary>Runs <paramref name="request"/> to its end and returns the images in batch order.</summary>
    /// <param name="request">The request.</param>
    /// <param name="progress">Receives the queue position and every denoising step.</param>
    /// <param name="cancellationToken">Cancels the call on the server (throws <see cref="OperationCanceledException"/>).</param>
    public async Task<GenerationOutput> GenerateImagesAsync(GenerateRequest request, IProgress<GenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        GenerationEvent.Started? started = null;
        GenerationEvent.Completed? completed = null;
        var images = new List<GenerationEvent.ImageGenerated>();
        TimeSpan elapsed = TimeSpan.Zero;
        await foreach (GenerationEvent e in GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            switch (e)
            {
                case GenerationEvent.Queued q:
                    progress?.Report(new GenerationProgress(GenerationStage.Queued, 0, 0, -1, q.Position, TimeSpan.Zero));
                    break;
                case GenerationEvent.Started s:
                    started = s;
                    progress?.Report(new GenerationProgress(GenerationStage.Started, 0, s.ExpectedSteps, -1, 0, TimeSpan.Zero));
                    break;
                case GenerationEvent.Progress p:
                    elapsed = p.Elapsed;
                    progress?.Report(new GenerationProgress(GenerationStage.Denoising, p.CompletedSteps, p.TotalSteps, p.Timestep, 0, p.Elapsed));
                    break;
                case GenerationEvent.ImageGenerated image:
                    images.Add(image);
                    break;
                case GenerationEvent.Completed c:
                    completed = c;
                    int steps = started?.ExpectedSteps ?? 0;
                    progress?.Report(new GenerationProgress(GenerationStage.Completed, steps, steps, 0, 0, c.GenerationTime));
                    break;
            }
        }

        if (started is null || completed is null)
        {
            throw new InvalidOperationException("The Generate stream ended without its started and completed events.");
        }

        images.Sort((a, b) => a.Index.CompareTo(b.Index));
        return new GenerationOutput(started.Seed, images, started, completed);
    }

    public void Dispose()
    {
        if (_ownsChannel)
        {
            _channel.Dispose();
        }
    }

    private static Exception Translate(RpcException ex, CancellationToken cancellationToken) =>
        ex.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested
            ? new OperationCanceledException("The call was cancelled.", ex, cancellationToken)
            : new VqDiffusionException(ex);

    private static TimeSpan Span(Duration? d) => d?.ToTimeSpan() ?? TimeSpan.Zero;

    private static GenerationEvent? Convert(GenerateResponse r) => r.EventCase switch
    {
        GenerateResponse.EventOneofCase.Queued => new GenerationEvent.Queued(r.Queued.Position, r.Queued.QueueLength),
        GenerateResponse.EventOneofCase.Started => new GenerationEvent.Started(
            r.Started.RequestId,
            r.Started.Prompts.ToArray(),
            r.Started.NumInferenceSteps,
            r.Started.GuidanceScale,
            r.Started.TruncationRate,
            r.Started.NumImagesPerPrompt,
            r.Started.Seed,
            r.Started.Timesteps.ToArray(),
            r.Started.NumImages,
            r.Started.ImageFormat,
            Span(r.Started.QueueWait),
            r.Started.TotalSteps,
            r.Started.Sampler,
            r.Started.Speed,
            r.Started.Prior,
            r.Started.HasEditStrength ? r.Started.EditStrength : null),
        GenerateResponse.EventOneofCase.Progress => new GenerationEvent.Progress(r.Progress.CompletedSteps, r.Progress.TotalSteps, r.Progress.Timestep, Span(r.Progress.Elapsed)),
        GenerateResponse.EventOneofCase.Snapshot => new GenerationEvent.Snapshot(
            r.Snapshot.CompletedSteps,
            r.Snapshot.Timestep,
            r.Snapshot.ImageIndex,
            r.Snapshot.Height,
            r.Snapshot.Width,
            r.Snapshot.Tokens.ToArray(),
            r.Snapshot.MaskedCount,
            r.Snapshot.Preview.IsEmpty ? null : r.Snapshot.Preview.ToByteArray(),
            string.IsNullOrEmpty(r.Snapshot.PreviewMimeType) ? null : r.Snapshot.PreviewMimeType),
        GenerateResponse.EventOneofCase.Image => new GenerationEvent.ImageGenerated(
            r.Image.Index, r.Image.PromptIndex, r.Image.Data.ToByteArray(), r.Image.MimeType, r.Image.Width, r.Image.Height, r.Image.Seed),
        GenerateResponse.EventOneofCase.Completed => new GenerationEvent.Completed(
            Span(r.Completed.QueueWait), Span(r.Completed.GenerationTime), Span(r.Completed.MeanStepTime), Span(r.Completed.DecodeTime), r.Completed.NumImages, r.Completed.DroppedEvents),
        _ => null, // an event kind newer than this client
    };
}
