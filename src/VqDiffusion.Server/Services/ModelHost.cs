using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Options;
using TorchSharp;
using VqDiffusion.Model.Imaging;
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
/// Loads the configured diffusers folder in the background at startup (or the small test pipeline
/// shipped with the server when none is configured) and owns it for the life of the process.
/// </summary>
public sealed class ModelHost : IHostedService, IDisposable
{
    private readonly ModelOptions _options;
    private readonly ILogger<ModelHost> _logger;
    private readonly IModelLoadGate _gate;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource<VQDiffusionPipeline> _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ModelThread _modelThread;
    private VQDiffusionPipeline? _pipeline;

    public ModelHost(IOptions<ModelOptions> options, ILogger<ModelHost> logger, IModelLoadGate gate, ModelThread modelThread)
    {
        _modelThread = modelThread;
        _options = options.Value;
        _logger = logger;
        _gate = gate;
        IsBuiltinTestModel = string.IsNullOrWhiteSpace(_options.Path);
        ModelPath = IsBuiltinTestModel
            ? System.IO.Path.Combine(AppContext.BaseDirectory, "models", "tiny-ithq")
            : System.IO.Path.GetFullPath(_options.Path!);
    }

    public string ModelPath { get; }

    public bool IsBuiltinTestModel { get; }

    public ModelState State { get; private set; } = ModelState.Loading;

    public string? FailureReason { get; private set; }

    /// <summary>Load plus warm-up time of the model, once it is ready (metric <c>vqd_model_load_seconds</c>).</summary>
    public TimeSpan? LoadTime { get; private set; }

    /// <summary>The pipeline, or null while loading / after a failure.</summary>
    public VQDiffusionPipeline? Pipeline => State == ModelState.Ready ? _pipeline : null;

    /// <summary>Completes when the model is loaded (faults if loading failed).</summary>
    public Task<VQDiffusionPipeline> Loaded => _loaded.Task;

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

    private async Task LoadAsync()
    {
        try
        {
            await _gate.WaitAsync(_stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
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
            _logger.LogInformation("Loading model from {ModelPath} on {Device} as {DType}", ModelPath, _options.Device, _options.DType);
            // Loaded and warmed up on the model thread, where every request will run.
            (_pipeline, TimeSpan warmUp, double loadedPeakRss) = await _modelThread.Post(() =>
            {
                VQDiffusionPipeline pipeline = VQDiffusionPipeline.FromPretrained(ModelPath, load);
                try
                {
                    double loadedPeak = PeakRssMiB();
                    var warm = Stopwatch.StartNew();
                    GenerationResult result = pipeline.WarmUp();
                    _ = ImageEncoder.Encode(result.Images[0], ImageFormat.Png, ImageEncoder.DefaultQuality);
                    return (pipeline, warm.Elapsed, loadedPeak);
                }
                catch
                {
                    pipeline.Dispose();
                    throw;
                }
            }).ConfigureAwait(false);
            LoadTime = clock.Elapsed;
            State = ModelState.Ready;
            _logger.LogInformation(
                "Model ready {ReadySeconds:F1} s after process start (load {LoadSeconds:F1} s, warm-up generation {WarmUpSeconds:F1} s; peak RSS {LoadedPeakRssMiB:F0} MiB after the load, {PeakRssMiB:F0} MiB after the warm-up; model thread: {ModelThread}): latent grid {LatentHeight}x{LatentWidth}, {NumCodes} codes, images {ImageWidth}x{ImageHeight}",
                (DateTime.Now - Process.GetCurrentProcess().StartTime).TotalSeconds, (clock.Elapsed - warmUp).TotalSeconds, warmUp.TotalSeconds, loadedPeakRss, PeakRssMiB(),
                _modelThread.OnMainThread ? "main" : "dedicated",
                _pipeline.transformer.Height, _pipeline.transformer.Width, _pipeline.transformer.NumVectorEmbeds - 1, _pipeline.ImageWidth, _pipeline.ImageHeight);
            _loaded.TrySetResult(_pipeline);
        }
        catch (Exception ex)
        {
            FailureReason = ex.Message;
            State = ModelState.Failed;
            _logger.LogCritical(ex, "Loading the model from {ModelPath} failed: {Reason}", ModelPath, ex.Message);
            _loaded.TrySetException(ex);
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

    public void Dispose()
    {
        _stopping.Dispose();

        // The pipeline goes only after the model thread has finished everything queued on it.
        _modelThread.Dispose();
        _pipeline?.Dispose();
    }
}
