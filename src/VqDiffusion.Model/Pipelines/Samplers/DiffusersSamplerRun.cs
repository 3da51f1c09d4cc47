using System.Diagnostics;
using TorchSharp;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// One run of <see cref="DiffusersSampler"/>: its prompt embeddings (the negative rows first with guidance) and
/// timesteps. A step: the transformer on the sample (twice with guidance), log p(x0) with the guidance mixed in on
/// the way out where the CPU kernel runs, renormalisation, truncation with diffusers' clamp(−70), then the scheduler's
/// posterior and Gumbel-max sample with the run's generator.
/// </summary>
internal sealed class DiffusersSamplerRun : ISharedForwardRun
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly Tensor _promptEmbeds;
    private readonly long[] _timesteps;
    private readonly float _guidanceScale;
    private readonly float _truncationRate;
    private readonly int _batchSize;
    private int _next;

    public DiffusersSamplerRun(VQDiffusionPipeline pipeline, Tensor promptEmbeds, long[] timesteps, float guidanceScale, float truncationRate, int batchSize)
    {
        _pipeline = pipeline;
        _promptEmbeds = promptEmbeds;
        _timesteps = timesteps;
        _guidanceScale = guidanceScale;
        _truncationRate = truncationRate;
        _batchSize = batchSize;
    }

    public IReadOnlyList<long> Timesteps => _timesteps;

    public bool IsDone => _next == _timesteps.Length;

    public int ForwardRows => DoClassifierFreeGuidance ? 2 * _batchSize : _batchSize;

    public long NextTimestep => _timesteps[_next];

    public Tensor ForwardEmbeddings => _promptEmbeds;

    /// <summary>Whether guidance may be mixed inside <see cref="LogPx0Kernel"/> (default true; off for the tests that compare).</summary>
    internal bool FusedGuidance { get; set; } = true;

    private bool DoClassifierFreeGuidance => _guidanceScale > 1.0f;

    /// <summary>The transformer's input for this step: the sample, twice with guidance.</summary>
    public Tensor ForwardInput(Tensor sample) => DoClassifierFreeGuidance ? cat([sample, sample], 0) : sample;

    public SamplerStep Step(Tensor sample, Generator generator, bool trackPredictedX0, ISamplingTrace? trace)
    {
        long t = NextTimestep;
        long t0 = Stopwatch.GetTimestamp();
        using var scope = NewDisposeScope();
        Tensor modelInput = ForwardInput(sample);
        using Tensor timestep = tensor(t, dtype: ScalarType.Int64, device: modelInput.device);
        Tensor logits = _pipeline.transformer.ForwardLogits(modelInput, _promptEmbeds, timestep);
        trace?.NetworkCall(_next, modelInput, t, false, _promptEmbeds);
        return Complete(logits, sample, generator, trackPredictedX0, t0, Stopwatch.GetTimestamp());
    }

    /// <summary>
    /// Everything after the transformer's blocks for this run's <paramref name="logits"/> rows: log-softmax,
    /// guidance, truncation, the scheduler step.
    /// </summary>
    public SamplerStep Complete(Tensor logits, Tensor sample, Generator generator, bool trackPredictedX0, long forwardStart, long forwardEnd)
    {
        long t = _timesteps[_next];
        long t2, t3, t4;
        Tensor next;
        Tensor? predictedX0 = null;
        using (var scope = NewDisposeScope())
        {
            // log p(x0), with guidance mixed in on the way out where the CPU kernel runs.
            Tensor? modelOutput = DoClassifierFreeGuidance && FusedGuidance ? LogPx0Kernel.TryGuided(logits, _guidanceScale) : null;
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
                    modelOutput = uncond + (_guidanceScale * (text - uncond));
                }

                modelOutput = modelOutput - modelOutput.logsumexp(1, keepdim: true);
            }

            t3 = Stopwatch.GetTimestamp();
            modelOutput = VQDiffusionPipeline.Truncate(modelOutput, _truncationRate, clampMin: -70);
            t4 = Stopwatch.GetTimestamp();
            next = _pipeline.scheduler.Step(modelOutput, t, sample, generator).DetachFromDisposeScope();
            if (trackPredictedX0)
            {
                // What a preview needs of this step: the most likely x0 of every position.
                predictedX0 = modelOutput.argmax(1).DetachFromDisposeScope();
            }
        }

        long t5 = Stopwatch.GetTimestamp();
        _next++;
        var phases = new StepPhases(
            Stopwatch.GetElapsedTime(forwardStart, forwardEnd),
            Stopwatch.GetElapsedTime(forwardEnd, t2),
            Stopwatch.GetElapsedTime(t2, t3),
            Stopwatch.GetElapsedTime(t3, t4),
            Stopwatch.GetElapsedTime(t4, t5));
        return new SamplerStep(next, predictedX0, t, phases);
    }

    public void Dispose() => _promptEmbeds.Dispose();
}
