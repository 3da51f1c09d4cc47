using System.Diagnostics;
using TorchSharp;
using VqDiffusion.Model.Pipelines.Samplers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// The state of one request between denoising steps: its current sample, CPU generator, the sampler family's run
/// state (prompt embeddings, plan of steps) and, when inpainting, the source tokens to keep. <see cref="Step"/>
/// advances it by one step (one network evaluation of the batch), so a scheduler can interleave (and batch) steps of
/// several runs; noise always comes from the run's own generator, so results never depend on what else runs.
/// The sample is kept in the sampler's row order; everything a caller reads is prompt-major.
/// </summary>
public sealed class DenoisingRun : IDisposable
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly torch.Generator _generator;
    private readonly ISamplerRun _sampler;
    private readonly int[] _rowOrder;
    private readonly Tensor? _outputRows;
    private readonly InpaintingMask? _inpainting;
    private Tensor _sample;
    private Tensor? _predictedX0;
    private bool _disposed;

    internal DenoisingRun(
        VQDiffusionPipeline pipeline,
        GenerationRequest request,
        ulong seed,
        torch.Generator generator,
        Tensor sample,
        ISamplerRun sampler,
        int[] rowOrder,
        InpaintingMask? inpainting)
    {
        _pipeline = pipeline;
        Request = request;
        Seed = seed;
        _generator = generator;
        _sample = sample;
        _sampler = sampler;
        _rowOrder = rowOrder;
        _inpainting = inpainting;
        bool identity = rowOrder.Select((row, i) => row == i).All(same => same);
        _outputRows = identity ? null : tensor(rowOrder.Select(r => (long)r).ToArray(), ScalarType.Int64).to(sample.device);
    }

    /// <summary>The request with its defaults filled in (the values this run uses).</summary>
    public GenerationRequest Request { get; }

    public ulong Seed { get; }

    /// <summary>
    /// The timestep of every planned step, in order (a timestep repeats when the prior needs several network calls);
    /// a copy, so it can be read on another thread while the run steps.
    /// </summary>
    public IReadOnlyList<long> Timesteps => _sampler.Timesteps.ToArray();

    public int CompletedSteps { get; private set; }

    public int TotalSteps => _sampler.Timesteps.Count;

    public bool IsDone => _sampler.IsDone;

    /// <summary>
    /// Whether each step keeps the argmax of its predicted x0, which <see cref="StepContext.Preview"/> needs
    /// (default true). A server turns it off for requests without previews (one argmax over the classes less per step).
    /// </summary>
    public bool TrackPredictedX0 { get; set; } = true;

    public int BatchSize => Request.BatchSize;

    /// <summary>Whether guidance may be mixed inside the log-softmax kernel (diffusers' sampler; default true; off for the tests that compare).</summary>
    internal bool FusedGuidance
    {
        get => (_sampler as DiffusersSamplerRun)?.FusedGuidance ?? false;
        set
        {
            if (_sampler is DiffusersSamplerRun diffusers)
            {
                diffusers.FusedGuidance = value;
            }
        }
    }

    /// <summary>Observes the network inputs, predictions, posteriors and multinomial picks (for the tests).</summary>
    internal ISamplingTrace? Trace { get; set; }

    public int LatentHeight => _pipeline.transformer.Height;

    public int LatentWidth => _pipeline.transformer.Width;

    public int MaskClass => _pipeline.transformer.NumVectorEmbeds - 1;

    /// <summary>Rows one transformer forward of this run takes: its images, twice with diffusers' guidance.</summary>
    public int ForwardRows => _sampler.ForwardRows;

    /// <summary>Runs the next denoising step and returns what it did.</summary>
    public StepContext Step()
    {
        EnsureNotDone();
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            return Advance(_sampler.Step(_sample, _generator, TrackPredictedX0, Trace));
        }
    }

    /// <summary>
    /// The next step of several runs of one pipeline with a single transformer forward where their samplers allow it
    /// (diffusers' sampler): their inputs are concatenated along the batch with a per-sample timestep (AdaLayerNorm's
    /// <c>[B, 1]</c> form), and each run finishes its own step (guidance, truncation, posterior, noise from its own
    /// generator) on its rows. The larger matrix products round differently from a run's own forward, so tokens can
    /// differ from running it alone at near-ties (see the README). Runs of other samplers step alone. A run whose own
    /// part fails gets its exception; a failing shared forward fails every run that shares it.
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
        var shared = new List<int>();
        for (int i = 0; i < runs.Count; i++)
        {
            if (runs[i]._pipeline != pipeline)
            {
                throw new ArgumentException("All runs must belong to one pipeline.", nameof(runs));
            }

            if (runs[i]._sampler is ISharedForwardRun)
            {
                shared.Add(i);
            }
            else
            {
                try
                {
                    results[i] = (runs[i].Step(), null);
                }
                catch (Exception ex)
                {
                    results[i] = (null, ex);
                }
            }
        }

        if (shared.Count > 0)
        {
            StepShared(pipeline, shared.Select(i => runs[i]).ToList(), shared, results);
        }

        return results;
    }

    private static void StepShared(VQDiffusionPipeline pipeline, List<DenoisingRun> runs, List<int> slots, (StepContext?, Exception?)[] results)
    {
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
                    run.EnsureNotDone();
                    var sampler = (ISharedForwardRun)run._sampler;
                    Tensor input = sampler.ForwardInput(run._sample);
                    rows[i] = (int)input.shape[0];
                    inputs.Add(input);
                    embeds.Add(sampler.ForwardEmbeddings);
                    timesteps.AddRange(Enumerable.Repeat(sampler.NextTimestep, rows[i]));
                }

                Tensor latents = cat(inputs, 0);
                Tensor encoder = cat(embeds, 0);
                Tensor perSample = tensor(timesteps.ToArray(), [timesteps.Count, 1], ScalarType.Int64).to(latents.device);
                logits = pipeline.transformer.ForwardLogits(latents, encoder, perSample);
            }
            catch (Exception ex)
            {
                foreach (int slot in slots)
                {
                    results[slot] = (null, ex);
                }

                return;
            }

            long t1 = Stopwatch.GetTimestamp();
            int offset = 0;
            for (int i = 0; i < runs.Count; i++)
            {
                DenoisingRun run = runs[i];
                try
                {
                    var sampler = (ISharedForwardRun)run._sampler;
                    results[slots[i]] = (run.Advance(sampler.Complete(logits.narrow(0, offset, rows[i]), run._sample, run._generator, run.TrackPredictedX0, t0, t1)), null);
                }
                catch (Exception ex)
                {
                    results[slots[i]] = (null, ex);
                }

                offset += rows[i];
            }
        }
    }

    /// <summary>Takes a sampler step's result as the new state (inpainting keeps the source outside the mask).</summary>
    private StepContext Advance(SamplerStep step)
    {
        Tensor next = step.Next;
        if (_inpainting is not null)
        {
            next = _inpainting.Apply(step.Next).DetachFromDisposeScope();
            step.Next.Dispose();
        }

        _sample.Dispose();
        _sample = next;
        _predictedX0?.Dispose();
        _predictedX0 = step.PredictedX0;
        CompletedSteps++;
        return new StepContext(this, CompletedSteps, step.Timestep, step.Phases);
    }

    private void EnsureNotDone()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsDone)
        {
            throw new InvalidOperationException("All denoising steps of this run are done.");
        }
    }

    /// <summary>The current tokens, [images, H·W] flattened row-major, prompt-major.</summary>
    public long[] Tokens()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var ordered = PromptMajor(_sample);
        using var cpu = ordered.cpu();
        return cpu.data<long>().ToArray();
    }

    /// <summary>Decodes the final sample into 8-bit RGB images (prompt-major: index = prompt · images_per_prompt + k).</summary>
    public IReadOnlyList<GeneratedImage> Decode()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!IsDone)
        {
            throw new InvalidOperationException($"Decode needs all {TotalSteps} steps; {CompletedSteps} are done.");
        }

        using var ordered = PromptMajor(_sample);
        return _pipeline.DecodeToImages(ordered, Request.NumImagesPerPrompt);
    }

    /// <summary>The decoder's float output of the current sample, [images, H, W, 3] in [0, 1], prompt-major (for the tests).</summary>
    internal Tensor DecodeFloat()
    {
        using var ordered = PromptMajor(_sample);
        return _pipeline.DecodePixels(ordered);
    }

    /// <summary>Replaces the current tokens (prompt-major, [images, H·W]): teacher forcing in the tests.</summary>
    internal void ForceTokens(IReadOnlyList<long> promptMajor)
    {
        using var given = tensor(promptMajor.ToArray(), [BatchSize, _pipeline.transformer.NumLatentPixels], ScalarType.Int64).to(_sample.device);
        Tensor next = VQDiffusionPipeline.ToRowOrder(given, _rowOrder);
        _sample.Dispose();
        _sample = next;
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
            int row = _rowOrder[imageIndex];
            Tensor x0 = _predictedX0[row].unsqueeze(0);
            Tensor current = _sample[row].unsqueeze(0);
            Tensor tokens = where(current.eq(MaskClass), x0, current);
            GeneratedImage image = _pipeline.DecodeToImages(tokens, Request.NumImagesPerPrompt)[0];
            return image with { Index = imageIndex, PromptIndex = imageIndex / Request.NumImagesPerPrompt };
        }
    }

    /// <summary>Rows of a [B, …] tensor in the sampler's order, reordered prompt-major (a new tensor).</summary>
    private Tensor PromptMajor(Tensor rows) => _outputRows is null ? rows.alias() : rows.index_select(0, _outputRows);

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _sample.Dispose();
        _predictedX0?.Dispose();
        _sampler.Dispose();
        _inpainting?.Dispose();
        _outputRows?.Dispose();
        _generator.Dispose();
    }
}
