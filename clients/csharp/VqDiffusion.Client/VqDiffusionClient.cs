using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.DependencyInjection;
using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Client;

/// <summary>
/// Client of the VqDiffusion.Grpc service. Failed calls throw <see cref="VqDiffusionException"/>;
/// a cancelled <see cref="CancellationToken"/> throws <see cref="OperationCanceledException"/>.
/// UNAVAILABLE and RESOURCE_EXHAUSTED are retried with backoff (<see cref="VqDiffusionRetryOptions"/>); a Generate
/// stream only while none of its events but queue positions has arrived (its run has not started), unless
/// <see cref="VqDiffusionRetryOptions.RetryGenerateAfterEvents"/>.
/// </summary>
public sealed class VqDiffusionClient : IDisposable
{
    /// <summary>The receive limit of channels the client creates (images can be large).</summary>
    public const int DefaultMaxReceiveMessageSize = 64 * 1024 * 1024;

    private readonly GrpcChannel _channel;
    private readonly bool _ownsChannel;
    private readonly IDisposable? _services;
    private readonly VqDiffusionRetryOptions _retry;
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

    /// <summary>
    /// Connects to <paramref name="address"/>: <c>http://host:port</c> / <c>https://host:port</c>, or
    /// <c>dns:///host:port</c> to balance calls round-robin over every address the name resolves to (a Kubernetes
    /// headless Service), re-resolved every <see cref="VqDiffusionClientOptions.DnsRefreshInterval"/>.
    /// </summary>
    public VqDiffusionClient(string address, VqDiffusionClientOptions options)
        : this(CreateChannel(address, options ?? throw new ArgumentNullException(nameof(options)), out ServiceProvider? services), ownsChannel: true, options.Retry, services, options.ApiKey)
    {
    }

    /// <summary>Uses an existing channel; it is disposed with the client only when <paramref name="ownsChannel"/> is true.</summary>
    /// <param name="channel">The channel.</param>
    /// <param name="ownsChannel">Whether <see cref="Dispose"/> disposes the channel.</param>
    /// <param name="retry">Retries; null = the defaults of <see cref="VqDiffusionRetryOptions"/>.</param>
    public VqDiffusionClient(GrpcChannel channel, bool ownsChannel = false, VqDiffusionRetryOptions? retry = null)
        : this(channel, ownsChannel, retry, services: null)
    {
    }

    private VqDiffusionClient(GrpcChannel channel, bool ownsChannel, VqDiffusionRetryOptions? retry, IDisposable? services, string? apiKey = null)
    {
        ArgumentNullException.ThrowIfNull(channel);
        if (apiKey is not null && ApiKeyProblem(apiKey) is string problem)
        {
            throw new ArgumentException($"the API key {problem}", nameof(apiKey));
        }

        _retry = retry ?? new VqDiffusionRetryOptions();
        _retry.Validate();
        _channel = channel;
        _ownsChannel = ownsChannel;
        _services = services;
        _client = apiKey is null
            ? new VqDiffusionService.VqDiffusionServiceClient(channel)
            : new VqDiffusionService.VqDiffusionServiceClient(channel.Intercept(headers =>
            {
                headers.Add("authorization", "Bearer " + apiKey);
                return headers;
            }));
    }

    /// <summary>
    /// What is wrong with <paramref name="apiKey"/> as the value of an <c>authorization</c> header ("must not be
    /// empty", "must be printable ASCII without spaces"), or null when nothing is. Never quotes the key.
    /// </summary>
    public static string? ApiKeyProblem(string apiKey)
    {
        ArgumentNullException.ThrowIfNull(apiKey);
        if (apiKey.Length == 0)
        {
            return "must not be empty";
        }

        return apiKey.All(c => c is > ' ' and <= '~') ? null : "must be printable ASCII without spaces";
    }

    /// <summary>
    /// A client that balances calls round-robin over several replicas (grpc-dotnet client-side load balancing):
    /// each call goes to the next replica that is connected; a replica that goes away is skipped until it is
    /// back, and a retried call goes to another one.
    /// </summary>
    /// <param name="addresses">The replicas, all <c>http://host:port</c> or all <c>https://host:port</c>.</param>
    /// <param name="options">Retries and channel settings; null = the defaults.</param>
    public static VqDiffusionClient ForAddresses(IEnumerable<string> addresses, VqDiffusionClientOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        options ??= new VqDiffusionClientOptions();
        Uri[] uris = addresses.Select(a => new Uri(a, UriKind.Absolute)).ToArray();
        if (uris.Length == 0)
        {
            throw new ArgumentException("at least one address is needed", nameof(addresses));
        }

        string scheme = uris[0].Scheme;
        if (uris.Any(u => u.Scheme != scheme) || (scheme != Uri.UriSchemeHttp && scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException("the addresses must be all http://host:port or all https://host:port", nameof(addresses));
        }

        BalancerAddress[] replicas = uris.Select(u => new BalancerAddress(u.DnsSafeHost, u.Port)).ToArray();
        var services = new ServiceCollection();
        services.AddSingleton<ResolverFactory>(new StaticResolverFactory(_ => replicas));
        ServiceProvider provider = services.BuildServiceProvider();
        var channelOptions = new GrpcChannelOptions
        {
            MaxReceiveMessageSize = DefaultMaxReceiveMessageSize,
            Credentials = scheme == Uri.UriSchemeHttps ? ChannelCredentials.SecureSsl : ChannelCredentials.Insecure,
            ServiceConfig = RoundRobin(),
            ServiceProvider = provider,
        };
        TrustRoots(channelOptions, options.RootCertificates);
        options.ConfigureChannel?.Invoke(channelOptions);
        return new VqDiffusionClient(GrpcChannel.ForAddress("static:///vqdiffusion", channelOptions), ownsChannel: true, options.Retry, provider, options.ApiKey);
    }

    /// <summary>The channel the client calls through.</summary>
    public GrpcChannel Channel => _channel;

    /// <summary>Describes the served model, its defaults and limits.</summary>
    public async Task<GetModelInfoResponse> GetModelInfoAsync(CancellationToken cancellationToken = default)
    {
        for (int attempt = 1; ; attempt++)
        {
            RpcException failure;
            try
            {
                using var call = _client.GetModelInfoAsync(new GetModelInfoRequest(), cancellationToken: cancellationToken);
                return await call.ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException ex)
            {
                failure = ex;
            }

            await DelayOrThrowAsync("GetModelInfo", attempt, failure, afterEvents: false, deadline: null, cancellationToken).ConfigureAwait(false);
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
        GenerateRequest attemptRequest = request;
        for (int attempt = 1; ; attempt++)
        {
            bool receivedEvents = false;
            ulong? startedSeed = null;
            RpcException? failure = null;
            using (AsyncServerStreamingCall<GenerateResponse> call = _client.Generate(attemptRequest, deadline: deadline, cancellationToken: cancellationToken))
            {
                IAsyncStreamReader<GenerateResponse> stream = call.ResponseStream;
                while (true)
                {
                    GenerationEvent? next = null;
                    bool ended = false;
                    try
                    {
                        if (await stream.MoveNext(cancellationToken).ConfigureAwait(false))
                        {
                            next = Convert(stream.Current);
                        }
                        else
                        {
                            ended = true;
                        }
                    }
                    catch (RpcException ex)
                    {
                        failure = ex;
                    }

                    if (failure is not null)
                    {
                        break;
                    }

                    if (ended)
                    {
                        yield break;
                    }

                    // Queue positions are not work: a stream that ended while queued (a replica that began to shut
                    // down, say) never started its run, so it may be sent again like one that failed before any event.
                    receivedEvents |= next is not GenerationEvent.Queued;
                    if (next is GenerationEvent.Started started)
                    {
                        startedSeed = started.Seed;
                    }

                    if (next is not null)
                    {
                        yield return next;
                    }
                }
            }

            await DelayOrThrowAsync("Generate", attempt, failure, receivedEvents, deadline, cancellationToken).ConfigureAwait(false);
            if (receivedEvents && !request.HasSeed && startedSeed is ulong seed)
            {
                // The run is repeated from the start with the seed it reported, so it makes the same images.
                attemptRequest = request.Clone();
                attemptRequest.Seed = seed;
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
                    // A Generate stream retried after its events (RetryGenerateAfterEvents) starts again here.
                    started = s;
                    completed = null;
                    images.Clear();
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
            _services?.Dispose();
        }
    }

    private static ServiceConfig RoundRobin() => new() { LoadBalancingConfigs = { new RoundRobinConfig() } };

    private static GrpcChannel CreateChannel(string address, VqDiffusionClientOptions options, out ServiceProvider? services)
    {
        ArgumentNullException.ThrowIfNull(address);
        services = null;
        var channelOptions = new GrpcChannelOptions { MaxReceiveMessageSize = DefaultMaxReceiveMessageSize };
        if (address.StartsWith("dns:", StringComparison.OrdinalIgnoreCase))
        {
            var collection = new ServiceCollection();
            collection.AddSingleton<ResolverFactory>(new DnsResolverFactory(options.DnsRefreshInterval));
            services = collection.BuildServiceProvider();
            channelOptions.Credentials = ChannelCredentials.Insecure;
            channelOptions.ServiceConfig = RoundRobin();
            channelOptions.ServiceProvider = services;
        }

        TrustRoots(channelOptions, options.RootCertificates);
        options.ConfigureChannel?.Invoke(channelOptions);
        return GrpcChannel.ForAddress(address, channelOptions);
    }

    /// <summary>A TLS handshake that trusts <paramref name="roots"/> (and only them) as root certificates; the host name is still checked.</summary>
    private static void TrustRoots(GrpcChannelOptions channelOptions, X509Certificate2Collection? roots)
    {
        if (roots is null)
        {
            return;
        }

        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
        };
        policy.CustomTrustStore.AddRange(roots);
        channelOptions.HttpHandler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            SslOptions = new SslClientAuthenticationOptions { CertificateChainPolicy = policy },
        };
        channelOptions.DisposeHttpClient = true;
    }

    /// <summary>Waits before the next attempt, or throws <paramref name="failure"/> when it is not retried.</summary>
    private async Task DelayOrThrowAsync(string method, int attempt, RpcException? failure, bool afterEvents, DateTime? deadline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(failure);
        TimeSpan? delay = cancellationToken.IsCancellationRequested ? null : _retry.DelayAfter(attempt, failure, afterEvents, deadline);
        if (delay is not TimeSpan wait)
        {
            throw Translate(failure, cancellationToken);
        }

        _retry.OnRetry?.Invoke(new RetryAttempt(method, attempt, failure.StatusCode, failure.Status.Detail, wait, afterEvents));
        await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
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
