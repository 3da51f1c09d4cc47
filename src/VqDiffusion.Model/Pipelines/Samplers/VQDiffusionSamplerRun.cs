using System.Diagnostics;
using TorchSharp;
using VqDiffusion.Model.Schedulers;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines.Samplers;

/// <summary>
/// One run of <see cref="VQDiffusionSampler"/>: its conditional (and unconditional) embeddings in the original's row
/// order, its plan of steps and, for the prior, how many tokens each image has unmasked at the current timestep. A
/// step is one <c>p_sample</c> call (or one <c>sample_fast</c> iteration): <c>cf_predict_start</c> with truncation,
/// then either the posterior's Gumbel sample, or the prior's: a Gumbel sample of the prediction and a multinomial
/// choice of which masked positions take it.
/// </summary>
internal sealed class VQDiffusionSamplerRun : ISamplerRun
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly DiffusionTransformerScheduler _scheduler;
    private readonly Tensor _cond;
    private readonly Tensor? _uncond;
    private readonly List<PlannedStep> _plan;
    private readonly Settings _settings;
    private readonly int _batchSize;
    private readonly int[] _sampled;
    private long _sampledTimestep = -1;
    private int _next;

    public VQDiffusionSamplerRun(VQDiffusionPipeline pipeline, Tensor cond, Tensor? uncond, List<PlannedStep> plan, Settings settings, int batchSize)
    {
        _pipeline = pipeline;
        _scheduler = pipeline.OriginalScheduler;
        _cond = cond;
        _uncond = uncond;
        _plan = plan;
        _settings = settings;
        _batchSize = batchSize;
        _sampled = new int[batchSize];
        Timesteps = new PlanTimesteps(plan);
    }

    public IReadOnlyList<long> Timesteps { get; }

    public bool IsDone => _next == _plan.Count;

    public int ForwardRows => _batchSize;

    private int MaskClass => _scheduler.MaskClass;

    public SamplerStep Step(Tensor sample, Generator generator, bool trackPredictedX0, ISamplingTrace? trace)
    {
        if (IsDone)
        {
            throw new InvalidOperationException("All steps of this run are done.");
        }

        int index = _next;
        PlannedStep step = _plan[index];
        var clock = new PhaseClock();
        Tensor next;
        Tensor? predictedX0 = null;
        using (var scope = NewDisposeScope())
        {
            Tensor recon = CfPredictStart(sample, step.Timestep, index, trace, ref clock);
            if (step.Prior)
            {
                next = PriorSample(recon, sample, step.Timestep, generator, index, trace);
            }
            else
            {
                Tensor posterior = _scheduler.QPosterior(recon, sample, step.PosteriorTimestep);
                trace?.Posterior(index, step.PosteriorTimestep, recon, sample, posterior);
                next = DiffusionTransformerScheduler.LogSampleCategorical(posterior, generator);
            }

            if (trackPredictedX0)
            {
                predictedX0 = recon.argmax(1).DetachFromDisposeScope();
            }

            next = next.DetachFromDisposeScope();
        }

        clock.Posterior = Stopwatch.GetTimestamp();
        _next++;
        if (step.Prior && _sampled.Min() < _settings.Schedule![step.Timestep] && (IsDone || _plan[_next].Timestep != step.Timestep))
        {
            // A drawn token was the mask class itself: the original's while loop calls p_sample once more.
            _plan.Insert(_next, step);
        }

        return new SamplerStep(next, predictedX0, step.Timestep, clock.Phases());
    }

    /// <summary>
    /// <c>cf_predict_start</c> wrapped by <c>predict_start_with_truncation</c> (text-to-image), or the plain
    /// <c>predict_start</c> (editing with a strength): contiguous [B, K, N] with the −70 mask row.
    /// </summary>
    private Tensor CfPredictStart(Tensor sample, long t, int step, ISamplingTrace? trace, ref PhaseClock clock)
    {
        using var scope = NewDisposeScope();
        Tensor recon = PredictStart(sample, _cond, t, step, unconditional: false, trace, ref clock);
        Tensor? uncond = _settings.GuidanceScale is null ? null : PredictStart(sample, _uncond!, t, step, unconditional: true, trace, ref clock);
        clock.Predicted = Stopwatch.GetTimestamp();
        if (_settings.GuidanceScale is float g)
        {
            Tensor c = recon[.., ..^1, ..];
            Tensor u = uncond![.., ..^1, ..];
            Tensor mixed = u + (g * (c - u));
            mixed = mixed - mixed.logsumexp(1, keepdim: true);
            mixed = mixed.clamp(-70, 0);
            recon = cat([mixed, MaskRow(mixed)], 1);
        }

        clock.Guidance = Stopwatch.GetTimestamp();
        if (_settings.TruncationRate is float rate)
        {
            // Truncation over all K rows, the mask row included; dropped classes become -70.
            recon = VQDiffusionPipeline.Truncate(recon, rate, clampMin: -70).contiguous();
        }

        clock.Truncation = Stopwatch.GetTimestamp();
        return recon.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>predict_start</c>: one transformer forward of the B rows at t, <c>log_softmax(logits.double(), 1).float()</c>,
    /// the −70 mask row appended, <c>clamp(−70, 0)</c>.
    /// </summary>
    private Tensor PredictStart(Tensor sample, Tensor embeddings, long t, int step, bool unconditional, ISamplingTrace? trace, ref PhaseClock clock)
    {
        using var scope = NewDisposeScope();
        long start = Stopwatch.GetTimestamp();
        using Tensor timestep = tensor(t, dtype: ScalarType.Int64, device: sample.device);
        Tensor logits = _pipeline.transformer.ForwardLogits(sample, embeddings, timestep);
        trace?.NetworkCall(step, sample, t, unconditional, embeddings);
        long forwardEnd = Stopwatch.GetTimestamp();
        Tensor logPx0 = Transformer2DModel.LogPx0(logits);
        Tensor result = cat([logPx0, MaskRow(logPx0)], 1).clamp(-70, 0);
        clock.AddForward(start, forwardEnd, Stopwatch.GetTimestamp());
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The original's <c>zero_vector</c>: <c>zeros(B, 1, N) − 70</c>.</summary>
    private static Tensor MaskRow(Tensor like) => full([like.shape[0], 1, like.shape[2]], -70f, ScalarType.Float32, like.device);

    /// <summary>
    /// <c>p_sample</c>'s prior branch (t &gt; 0, <c>prior_rule</c> &gt; 0): score the positions (ones, or the purity
    /// <c>max p(x0)</c> normalised per image), optionally reweight the prediction by <c>(1 + r·score)</c>, draw every
    /// position's token from it, and let each image's multinomial over its masked positions' scores pick the ones that
    /// take their token.
    /// </summary>
    private Tensor PriorSample(Tensor recon, Tensor sample, long t, Generator generator, int step, ISamplingTrace? trace)
    {
        using var scope = NewDisposeScope();
        if (_sampledTimestep != t)
        {
            Array.Clear(_sampled);
            _sampledTimestep = t;
        }

        int toSample = _settings.Schedule![t];
        Tensor score;
        if (_settings.PriorRule == 1)
        {
            score = ones([_batchSize, recon.shape[2]], ScalarType.Float32, recon.device);
        }
        else
        {
            score = recon.exp().max(1).values.clamp(0, 1);
            score = score / (score.max(1, keepdim: true).values + 1e-10);
        }

        Tensor prob = recon;
        if (_settings.PriorRule != 1 && _settings.PriorWeight > 0)
        {
            prob = ((1 + (score * _settings.PriorWeight)).unsqueeze(1) * recon).softmax(1).log().clamp(-70, 0);
        }

        long[] drawn = CpuLongs(DiffusionTransformerScheduler.LogSampleCategorical(prob, generator));
        long[] current = CpuLongs(sample);
        Tensor selectable = score.clone();
        if (selectable.sum().item<float>() < (float)1e-6)
        {
            selectable = selectable + 1;
        }

        selectable = selectable.masked_fill(sample.ne(MaskClass), 0);
        float[] scores = selectable.cpu().contiguous().data<float>().ToArray();

        int pixels = (int)sample.shape[1];
        long[] updated = (long[])current.Clone();
        for (int i = 0; i < _batchSize; i++)
        {
            int n = VQDiffusionSampler.PriorCount(toSample, _sampled[i], _settings.PriorPs);
            if (n <= 0)
            {
                continue;
            }

            float[] row = scores.AsSpan(i * pixels, pixels).ToArray();
            int[] selected = MultinomialWithoutReplacement.Sample(row, n, generator);
            trace?.Multinomial(step, i, row, n, selected);
            int before = 0;
            int after = 0;
            foreach (int position in selected)
            {
                updated[(i * pixels) + position] = drawn[(i * pixels) + position];
            }

            for (int p = 0; p < pixels; p++)
            {
                before += current[(i * pixels) + p] != MaskClass ? 1 : 0;
                after += updated[(i * pixels) + p] != MaskClass ? 1 : 0;
            }

            _sampled[i] += after - before;
        }

        return tensor(updated, [_batchSize, pixels], ScalarType.Int64).to(sample.device).MoveToOuterDisposeScope();
    }

    private static long[] CpuLongs(Tensor t)
    {
        using Tensor cpu = t.cpu().contiguous();
        return cpu.data<long>().ToArray();
    }

    public void Dispose()
    {
        _cond.Dispose();
        _uncond?.Dispose();
    }

    /// <summary>One planned step: the timestep the network sees, the posterior's, and whether the prior updates the sample.</summary>
    internal readonly record struct PlannedStep(long Timestep, long PosteriorTimestep, bool Prior);

    /// <summary>What a run applies at every step.</summary>
    /// <param name="GuidanceScale">The guidance scale when guided; null = the conditional prediction only.</param>
    /// <param name="TruncationRate">The truncation rate; null = no truncation (editing).</param>
    /// <param name="PriorRule">The original's prior_rule (0 none, 1 uniform, 2 purity).</param>
    /// <param name="PriorPs">At most this many tokens per image and call.</param>
    /// <param name="PriorWeight">The purity reweighting r.</param>
    /// <param name="Schedule">Tokens per timestep (index = t); null when no step uses it.</param>
    internal sealed record Settings(float? GuidanceScale, float? TruncationRate, int PriorRule, int PriorPs, float PriorWeight, int[]? Schedule);

    /// <summary>The plan's timesteps as a live list (a step appended to the plan appears here).</summary>
    private sealed class PlanTimesteps(List<PlannedStep> plan) : IReadOnlyList<long>
    {
        public int Count => plan.Count;

        public long this[int index] => plan[index].Timestep;

        public IEnumerator<long> GetEnumerator() => plan.Select(s => s.Timestep).GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>Timestamps of a step's phases; the forwards and log-softmaxes are summed (one or two per step).</summary>
    private struct PhaseClock
    {
        private long _forward;
        private long _logSoftmax;

        public long Predicted { get; set; }

        public long Guidance { get; set; }

        public long Truncation { get; set; }

        public long Posterior { get; set; }

        public void AddForward(long start, long forwardEnd, long end)
        {
            _forward += forwardEnd - start;
            _logSoftmax += end - forwardEnd;
        }

        public readonly StepPhases Phases() => new(
            Stopwatch.GetElapsedTime(0, _forward),
            Stopwatch.GetElapsedTime(0, _logSoftmax),
            Stopwatch.GetElapsedTime(Predicted, Guidance),
            Stopwatch.GetElapsedTime(Guidance, Truncation),
            Stopwatch.GetElapsedTime(Truncation, Posterior));
    }
}
