using System.Diagnostics;
using TorchSharp;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// The state of one request between denoising steps: its prompt embeddings, current sample, CPU
/// generator and position in the timesteps. <see cref="Step"/> advances it by one timestep, so a
/// scheduler can interleave (and later batch) steps of several runs; noise always comes from the
/// run's own generator, so results never depend on what else runs.
/// </summary>
public sealed class DenoisingRun : IDisposable
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly Tensor _promptEmbeds;
    private readonly torch.Generator _generator;
    private readonly long[] _timesteps;
    private Tensor _sample;
    private Tensor? _predictedX0;
    private bool _disposed;

    internal DenoisingRun(VQDiffusionPipeline pipeline, GenerationRequest request, ulong seed, Tensor promptEmbeds, Tensor sample, long[] timesteps)
    {
        _pipeline = pipeline;
        Request = request;
        Seed = seed;
        _promptEmbeds = promptEmbeds;
        _sample = sample;
        _timesteps = timesteps;
        _generator = new torch.Generator(seed, CPU);
    }

    public GenerationRequest Request { get; }

    public ulong Seed { get; }

    public IReadOnlyList<long> Timesteps => _timesteps;

    public int CompletedSteps { get; private set; }

    public int TotalSteps => _timesteps.Length;

    public bool IsDone => CompletedSteps == _timesteps.Length;

    /// <summary>
    /// Whether each step keeps the argmax of its predicted x0, which <see cref="StepContext.Preview"/> needs
    /// (default true). A server turns it off for requests without previews (one argmax over the classes less per step).
    /// </summary>
    public bool TrackPredictedX0 { get; set; } = true;

    public int BatchSize => Request.BatchSize;

    /// <summary>Whether guidance may be mixed inside <see cref="LogPx0Kernel"/> (default true; off for the tests that compare).</summary>
    internal bool FusedGuidance { get; set; } = true;

    public int LatentHeight => _pipeline.transformer.Height;

    public int LatentWidth => _pipeline.transformer.Width;

    public int MaskClass => _pipeline.transformer.NumVectorEmbeds - 1;

    private bool DoClassifierFreeGuidance => Request.GuidanceScale > 1.0f;

    /// <summary>Rows this run adds to a transformer forward: its images, twice with guidance.</summary>
    public int ForwardRows => DoClassifierFreeGuidance ? 2 * BatchSize : BatchSize;

    /// <summary>Runs the next denoising step and returns what it did.</summary>
    public StepContext Step()
    {
        EnsureNotDone();
        long t = _timesteps[CompletedSteps];
        long t0 = Stopwatch.GetTimestamp();
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            Tensor modelInput = ModelInput();
            using Tensor timestep = tensor(t, dtype: ScalarType.Int64, device: modelInput.device);
            Tensor logits = _pipeline.transformer.ForwardLogits(modelInput, _promptEmbeds, timestep);
            return CompleteStep(logits, t0, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>
    /// The next step of several runs of one pipeline with a single transformer forward: their inputs are
    /// concatenated along the batch with a per-sample timestep (AdaLayerNorm's <c>[B, 1]</c> form), and each run
    /// finishes its own step (guidance, truncation, posterior, noise from its own generator) on its rows. The
    /// larger matrix products round differently from a run's own forward, so tokens can differ from running it
    /// alone at near-ties (see the README). A run whose own part fails gets its exception; a failing forward fails
    /// every run.
    /// </summary>
    public static IReadOnlyList<(StepContext? Step, Exception? Error)> StepTogether(IReadOnlyList<DenoisingRun> runs)
    {
        ArgumentNullException.ThrowIfNull(runs);
        var results = new (StepContext?, Exception?)[runs.Count];
        if (runs.Count == 0)
        {
            return results;
        }

        VQDiffusionPipeline pipeline = runs[0]._pipeline;
        long t0 = Stopwatch.GetTimestamp();
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            Tensor logits;
            var rows = new int[runs.Count];
            try
            {
                var inputs = new List<Tensor>();
                var embeds = new List<Tensor>();
                var timesteps = new List<long>();
                for (int i = 0; i < runs.Count; i++)
                {
                    DenoisingRun run = runs[i];
                    if (run._pipeline != pipeline)
                    {
                        throw new ArgumentException("All runs must belong to one pipeline.", nameof(runs));
                    }

                    run.EnsureNotDone();
                    Tensor input = run.ModelInput();
                    rows[i] = (int)input.shape[0];
                    inputs.Add(input);
                    embeds.Add(run._promptEmbeds);
                    timesteps.AddRange(Enumerable.Repeat(run._timesteps[run.CompletedSteps], rows[i]));
                }

                Tensor latents = cat(inputs, 0);
                Tensor encoder = cat(embeds, 0);
                Tensor perSample = tensor(timesteps.ToArray(), [timesteps.Count, 1], ScalarType.Int64).to(latents.device);
                logits = pipeline.transformer.ForwardLogits(latents, encoder, perSample);
            }
            catch (Exception ex)
            {
                Array.Fill(results, (null, ex));
                return results;
            }

            long t1 = Stopwatch.GetTimestamp();
            int offset = 0;
            for (int i = 0; i < runs.Count; i++)
            {
                try
                {
                    results[i] = (runs[i].CompleteStep(logits.narrow(0, offset, rows[i]), t0, t1), null);
                }
                catch (Exception ex)
                {
                    results[i] = (null, ex);
                }

                offset += rows[i];
            }
        }

        return results;
    }

    private void EnsureNotDone()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsDone)
        {
            throw new InvalidOperationException("All denoising steps of this run are done.");
        }
    }

    /// <summary>The transformer's input for this step: the sample, twice with guidance.</summary>
    private Tensor ModelInput() => DoClassifierFreeGuidance ? cat([_sample, _sample], 0) : _sample;

    /// <summary>
    /// Everything after the transformer's blocks for this run's <paramref name="logits"/> rows: log-softmax,
    /// guidance, truncation, the scheduler step. Loop-carried tensors are detached from every dispose scope.
    /// </summary>
    private StepContext CompleteStep(Tensor logits, long t0, long t1)
    {
        long t = _timesteps[CompletedSteps];
        long t2, t3, t4;
        using (var scope = NewDisposeScope())
        {
            // log p(x0), with guidance mixed in on the way out where the CPU kernel runs.
            Tensor? modelOutput = DoClassifierFreeGuidance && FusedGuidance ? LogPx0Kernel.TryGuided(logits, Request.GuidanceScale) : null;
            bool mixed = modelOutput is not null;
            modelOutput ??= Transformer2DModel.LogPx0(logits);
            t2 = Stopwatch.GetTimestamp();
            if (DoClassifierFreeGuidance)
            {
                if (!mixed)
                {
                    Tensor[] chunks = modelOutput.chunk(2, 0);
                    Tensor uncond = chunks[0];
                    Tensor text = chunks[1];
                    modelOutput = uncond + (Request.GuidanceScale * (text - uncond));
                }

                modelOutput = modelOutput - modelOutput.logsumexp(1, keepdim: true);
            }

            t3 = Stopwatch.GetTimestamp();
            modelOutput = VQDiffusionPipeline.Truncate(modelOutput, Request.TruncationRate, clampMin: -70);
            t4 = Stopwatch.GetTimestamp();
            Tensor next = _pipeline.scheduler.Step(modelOutput, t, _sample, _generator);

            _sample.Dispose();
            _sample = next.DetachFromDisposeScope();
            _predictedX0?.Dispose();
            _predictedX0 = null;
            if (TrackPredictedX0)
            {
                // What a preview needs of this step: the most likely x0 of every position.
                _predictedX0 = modelOutput.argmax(1).DetachFromDisposeScope();
            }
        }

        long t5 = Stopwatch.GetTimestamp();
        CompletedSteps++;
        var phases = new StepPhases(
            Stopwatch.GetElapsedTime(t0, t1),
            Stopwatch.GetElapsedTime(t1, t2),
            Stopwatch.GetElapsedTime(t2, t3),
            Stopwatch.GetElapsedTime(t3, t4),
            Stopwatch.GetElapsedTime(t4, t5));
        return new StepContext(this, CompletedSteps, t, phases);
    }

    /// <summary>The current tokens, [images, H·W] flattened row-major.</summary>
    public long[] Tokens()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var cpu = _sample.cpu();
        return cpu.data<long>().ToArray();
    }

    /// <summary>Decodes the final sample into 8-bit RGB images (diffusers' batch order).</summary>
    public IReadOnlyList<GeneratedImage> Decode()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!IsDone)
        {
            throw new InvalidOperationException($"Decode needs all {TotalSteps} steps; {CompletedSteps} are done.");
        }

        return _pipeline.DecodeToImages(_sample, Request.NumImagesPerPrompt);
    }

    internal GeneratedImage Preview(int imageIndex)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (imageIndex < 0 || imageIndex >= BatchSize)
        {
            throw new ArgumentOutOfRangeException(nameof(imageIndex), imageIndex, $"image index must be in 0..{BatchSize - 1}");
        }

        if (_predictedX0 is null)
        {
            throw new InvalidOperationException(TrackPredictedX0
                ? "A preview needs at least one completed step."
                : "Previews need TrackPredictedX0 on before the step.");
        }

        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            Tensor x0 = _predictedX0[imageIndex].unsqueeze(0);
            Tensor current = _sample[imageIndex].unsqueeze(0);
            Tensor tokens = where(current.eq(MaskClass), x0, current);
            GeneratedImage image = _pipeline.DecodeToImages(tokens, Request.NumImagesPerPrompt)[0];
            return image with { Index = imageIndex, PromptIndex = imageIndex / Request.NumImagesPerPrompt };
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _sample.Dispose();
        _predictedX0?.Dispose();
        _promptEmbeds.Dispose();
        _generator.Dispose();
    }
}
