using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Options;
using TorchSharp;
using VqDiffusion.Model.Hub;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Runtime;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Services;

/// <summary>Where the model is in its life: health reports NOT_SERVING until it is <see cref="ModelState.Ready"/>.</summary>
public enum ModelState
{
    Loading,
    Ready,
    Failed,
}

/// <summary>
/// Loads the configured diffusers folder in the background at startup (or the small test pipeline shipped with the
/// server when none is configured) and owns it for the life of the process. Its state is published through one
/// thing only, the <see cref="Loaded"/> task (safe to read from any thread). A load failure is logged once, with
/// its details; callers only ever see <see cref="FailedMessage"/>. With <c>Model:ExitOnLoadFailure</c> (the
/// default) the failure also stops the process (<see cref="ExitCode"/>). The pipeline is disposed only once every
/// <see cref="Use"/> lease (the worker's) has been returned.
/// </summary>
public sealed class ModelHost : IHostedService, IDisposable
{
    /// <summary>What callers are told when the model failed to load (never paths or exception text).</summary>
    public const string FailedMessage = "the model failed to load; see the server log";

    /// <summary>Process exit code after a load failure with <c>Model:ExitOnLoadFailure</c>.</summary>
    public const int LoadFailureExitCode = 3;

    private readonly ModelOptions _options;
    private readonly ILogger<ModelHost> _logger;
    private readonly IModelLoadGate _gate;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource<VQDiffusionPipeline> _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ModelThread _modelThread;
    private readonly object _leaseGate = new();
    private int _leases;
    private bool _disposed;
    private int _disposeStarted;

    public ModelHost(IOptions<ModelOptions> options, ILogger<ModelHost> logger, IModelLoadGate gate, ModelThread modelThread, IHostApplicationLifetime lifetime)
    {
        _modelThread = modelThread;
        _options = options.Value;
        _logger = logger;
        _gate = gate;
        _lifetime = lifetime;
        IsBuiltinTestModel = string.IsNullOrWhiteSpace(_options.Path);
        ModelPath = IsBuiltinTestModel
            ? System.IO.Path.Combine(AppContext.BaseDirectory, "models", "tiny-ithq")
            : ModelResolver.IsHubId(_options.Path!) ? _options.Path!.Trim() : System.IO.Path.GetFullPath(_options.Path!);
        Provenance = new ModelProvenance(System.IO.Path.GetFileName(ModelPath.TrimEnd(System.IO.Path.DirectorySeparatorChar)));
    }

    /// <summary>The model folder (a Hub id's cache snapshot once resolved; the id until then).</summary>
    public string ModelPath { get; private set; }

    /// <summary>The model's name (Hub id or folder name) and revision, written into every image's metadata.</summary>
    public ModelProvenance Provenance { get; private set; }

    public bool IsBuiltinTestModel { get; }

    /// <summary>Read from <see cref="Loaded"/>: loading, ready, or failed (a load stopped by shutdown counts as failed).</summary>
    public ModelState State => _loaded.Task.Status switch
    {
        TaskStatus.RanToCompletion => ModelState.Ready,
        TaskStatus.Faulted or TaskStatus.Canceled => ModelState.Failed,
        _ => ModelState.Loading,
    };

    /// <summary>Load plus warm-up time of the model, once it is ready (metric <c>vqd_model_load_seconds</c>).</summary>
    public TimeSpan? LoadTime { get; private set; }

    /// <summary>The pipeline, or null while loading / after a failure.</summary>
    public VQDiffusionPipeline? Pipeline => _loaded.Task.IsCompletedSuccessfully ? _loaded.Task.Result : null;

    /// <summary>Completes when the model is loaded (faults if loading failed; cancelled if the host stopped first).</summary>
    public Task<VQDiffusionPipeline> Loaded => _loaded.Task;

    /// <summary>Cancelled when the host stops or this is disposed; model users stop at their next step.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>0, or <see cref="LoadFailureExitCode"/> when the model failed to load and <c>Model:ExitOnLoadFailure</c> is on.</summary>
    public int ExitCode => _options.ExitOnLoadFailure && _loaded.Task.IsFaulted ? LoadFailureExitCode : 0;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (IsBuiltinTestModel)
        {
            _logger.LogWarning(
                "No model configured (Model:Path / VQD_Model__Path); serving the small built-in test pipeline at {ModelPath}. Its images are not meaningful; configure a real model such as microsoft/vq-diffusion-ithq.",
                ModelPath);
        }

        _ = Task.Run(LoadAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>
    /// A lease on the loaded pipeline: <see cref="Dispose()"/> waits until it is returned before it disposes any model
    /// object. Null when the model is not loaded or the host is going away.
    /// </summary>
    public IDisposable? Use()
    {
        lock (_leaseGate)
        {
            if (_disposed || Pipeline is null)
            {
                return null;
            }

            _leases++;
            return new Lease(this);
        }
    }

    private void Return()
    {
        lock (_leaseGate)
        {
            _leases--;
            Monitor.PulseAll(_leaseGate);
        }
    }

    private async Task LoadAsync()
    {
        try
        {
            await _gate.WaitAsync(_stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _loaded.TrySetCanceled();
            return;
        }

        var clock = Stopwatch.StartNew();
        try
        {
            var load = new PipelineLoadOptions
            {
                Device = new torch.Device(_options.Device),
                DType = ParseDType(_options.DType),
                Variant = string.IsNullOrWhiteSpace(_options.Variant) ? null : _options.Variant,
            };
            ResolvedModel resolved = await ModelResolver.ResolveAsync(ModelPath, load.Variant, _options.ToHubOptions(), new HubDownloadLog(_logger), _stopping.Token).ConfigureAwait(false);
            (ModelPath, Provenance) = (resolved.LocalPath, new ModelProvenance(resolved.Name, resolved.HubId?.RevisionOrDefault, resolved.CommitHash));
            _logger.LogInformation("Loading model from {ModelPath} on {Device} as {DType}", resolved.Description, _options.Device, _options.DType);
            // Loaded and warmed up on the model thread, where every request will run.
            (VQDiffusionPipeline pipeline, TimeSpan warmUp, double loadedPeakRss) = await _modelThread.Post(() =>
            {
                VQDiffusionPipeline pipeline = VQDiffusionPipeline.FromPretrained(ModelPath, load);
                try
                {
                    double loadedPeak = PeakRssMiB();
                    var warm = Stopwatch.StartNew();
                    if (!_stopping.IsCancellationRequested)
                    {
                        GenerationResult result = pipeline.WarmUp();
                        _ = ImageEncoder.Encode(result.Images[0], ImageFormat.Png, ImageEncoder.DefaultQuality);
                    }

                    return (pipeline, warm.Elapsed, loadedPeak);
                }
                catch
                {
                    pipeline.Dispose();
                    throw;
                }
            }).ConfigureAwait(false);

            LoadTime = clock.Elapsed;
            PipelineInfo info = pipeline.Info;
            if (!_loaded.TrySetResult(pipeline))
            {
                pipeline.Dispose();
                return;
            }

            _logger.LogInformation(
                "Model ready {ReadySeconds:F1} s after process start (load {LoadSeconds:F1} s, warm-up generation {WarmUpSeconds:F1} s; peak RSS {LoadedPeakRssMiB:F0} MiB after the load, {PeakRssMiB:F0} MiB after the warm-up; model thread: {ModelThread}): latent grid {LatentHeight}x{LatentWidth}, {NumCodes} codes, images {ImageWidth}x{ImageHeight}",
                (DateTime.Now - Process.GetCurrentProcess().StartTime).TotalSeconds, (clock.Elapsed - warmUp).TotalSeconds, warmUp.TotalSeconds, loadedPeakRss, PeakRssMiB(),
                _modelThread.OnMainThread ? "main" : "dedicated",
                info.LatentHeight, info.LatentWidth, info.NumCodes, info.ImageWidth, info.ImageHeight);
        }
        catch (ObjectDisposedException) when (_stopping.IsCancellationRequested)
        {
            _loaded.TrySetCanceled(); // the host stopped (and the model thread with it) before the load ran
        }
        catch (Exception ex)
        {
            ReportFailure(ex);
            _loaded.TrySetException(ex);
            if (_options.ExitOnLoadFailure)
            {
                _lifetime.StopApplication();
            }
        }
    }

    /// <summary>The one log line of a load failure: the reason (with the stack trace only for unexpected errors) and what happens next.</summary>
    private void ReportFailure(Exception ex)
    {
        string consequence = _options.ExitOnLoadFailure
            ? string.Create(CultureInfo.InvariantCulture, $"stopping with exit code {LoadFailureExitCode} (Model:ExitOnLoadFailure=false keeps the server up, NOT_SERVING)")
            : "the server stays up, NOT_SERVING, every call answered UNAVAILABLE (Model:ExitOnLoadFailure=false)";
        string reason = ex.Message.ReplaceLineEndings(" ");
        if (ex is ModelLoadException or IOException or UnauthorizedAccessException or JsonException or ArgumentException or NotSupportedException)
        {
            _logger.LogCritical("Loading the model from {ModelPath} failed: {Reason}; {Consequence}", ModelPath, reason, consequence);
        }
        else
        {
            _logger.LogCritical(ex, "Loading the model from {ModelPath} failed: {Reason}; {Consequence}", ModelPath, reason, consequence);
        }
    }

    private static double PeakRssMiB()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
                }
            }
        }
        catch (IOException)
        {
        }

        return double.NaN;
    }

    private static torch.ScalarType ParseDType(string value) =>
        string.IsNullOrWhiteSpace(value) ? torch.ScalarType.Float32
        : PipelineLoadOptions.TryParseDType(value, out var dtype) ? dtype
        : throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Model:DType must be float32, float16 or bfloat16, not '{value}'."));

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _stopping.Cancel();
        return Task.CompletedTask;
    }

    /// <summary>
    /// Stops model users, waits for the model thread (a dedicated one is joined) and for every <see cref="Use"/> lease
    /// to be returned, and only then disposes the pipeline.
    /// </summary>
    public void Dispose()
    {
        // Registered twice (singleton and hosted service), so the container disposes it twice.
        if (Interlocked.Exchange(ref _disposeStarted, 1) != 0)
        {
            return;
        }

        _stopping.Cancel();

        // The pipeline goes only after the model thread has finished everything queued on it...
        _modelThread.Dispose();

        // ...and after the worker has returned its lease (it stops at its next step boundary).
        lock (_leaseGate)
        {
            _disposed = true;
            while (_leases > 0)
            {
                Monitor.Wait(_leaseGate);
            }
        }

        _loaded.TrySetCanceled();
        if (_loaded.Task.IsCompletedSuccessfully)
        {
            _loaded.Task.Result.Dispose();
        }
    }

    /// <summary>A returned-once lease from <see cref="Use"/>.</summary>
    private sealed class Lease(ModelHost host) : IDisposable
    {
        private int _returned;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _returned, 1) == 0)
            {
                host.Return();
            }
        }
    }
}
