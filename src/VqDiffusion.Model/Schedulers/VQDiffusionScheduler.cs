using TorchSharp;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Schedulers;

/// <summary>
/// Port of diffusers' <c>VQDiffusionScheduler</c> (mask-and-replace diffusion, Gu et al. 2022).
/// The schedule tables are computed in float64 exactly like diffusers (numpy arithmetic, torch.log)
/// and kept as float32. The scheduler holds no per-request state: <see cref="Timesteps"/> returns the
/// timesteps of a run and <see cref="Step"/> takes the request's generator, so one instance serves
/// concurrent requests.
/// </summary>
public sealed class VQDiffusionScheduler : IDisposable
{
    /// <summary>log(1e-30) in float32 as libtorch computes it, when its vectorised and scalar kernels agree.</summary>
    private static readonly Lazy<float?> LogTiny = new(() =>
    {
        using var vector = full(64, 1e-30f, float32).log();
        using var scalar = full(1, 1e-30f, float32).log();
        using var first = vector[0];
        float v = first.item<float>();
        return BitConverter.SingleToInt32Bits(v) == BitConverter.SingleToInt32Bits(scalar.item<float>()) ? v : null;
    });

    private readonly Tensor _logAt;
    private readonly Tensor _logBt;
    private readonly Tensor _logCt;
    private readonly Tensor _logCumprodAt;
    private readonly Tensor _logCumprodBt;
    private readonly Tensor _logCumprodCt;

    // Per timestep, (log_onehot + a).logaddexp(b) at x_t's class and elsewhere, and the mask-class value c, computed
    // once by libtorch's kernels (null where its vectorised and scalar kernels disagree).
    private readonly (float Hit, float Miss, float C)?[] _transitions;
    private readonly (float Hit, float Miss, float C)?[] _cumulativeTransitions;

    public VQDiffusionScheduler(VQDiffusionSchedulerConfig config, Device? device = null)
    {
        if (config.NumVecClasses is not int numVecClasses || numVecClasses < 2)
        {
            throw new ArgumentException("num_vec_classes must be set and at least 2 (codes + the mask class).", nameof(config));
        }

        if (config.NumTrainTimesteps < 2)
        {
            throw new ArgumentException("num_train_timesteps must be at least 2.", nameof(config));
        }

        Config = config;
        NumEmbed = numVecClasses;
        MaskClass = numVecClasses - 1;
        device ??= CPU;

        var (at, att) = AlphaSchedules(config.NumTrainTimesteps, config.AlphaCumStart, config.AlphaCumEnd);
        var (ct, ctt) = GammaSchedules(config.NumTrainTimesteps, config.GammaCumStart, config.GammaCumEnd);
        int numNonMaskClasses = NumEmbed - 1;
        double[] bt = at.Select((a, i) => (1 - a - ct[i]) / numNonMaskClasses).ToArray();
        double[] btt = att.Select((a, i) => (1 - a - ctt[i]) / numNonMaskClasses).ToArray();

        _logAt = LogTable(at, device);
        _logBt = LogTable(bt, device);
        _logCt = LogTable(ct, device);
        _logCumprodAt = LogTable(att, device);
        _logCumprodBt = LogTable(btt, device);
        _logCumprodCt = LogTable(ctt, device);
        _transitions = TransitionValues(_logAt, _logBt, _logCt);
        _cumulativeTransitions = TransitionValues(_logCumprodAt, _logCumprodBt, _logCumprodCt);
    }

    public VQDiffusionSchedulerConfig Config { get; }

    /// <summary>Number of classes including the mask class.</summary>
    public int NumEmbed { get; }

    public int MaskClass { get; }

    public int NumTrainTimesteps => Config.NumTrainTimesteps;

    /// <summary>Computes the transition log-probabilities with diffusers' elementwise formula (for the tests).</summary>
    internal bool ElementwiseTransitions { get; set; }

    /// <summary>Whether <see cref="Step"/> may use <see cref="PosteriorKernel"/> (default true; off for the tests that compare).</summary>
    internal bool FusedPosterior { get; set; } = true;

    public Tensor log_at => _logAt;

    public Tensor log_bt => _logBt;

    public Tensor log_ct => _logCt;

    public Tensor log_cumprod_at => _logCumprodAt;

    public Tensor log_cumprod_bt => _logCumprodBt;

    public Tensor log_cumprod_ct => _logCumprodCt;

    /// <summary>
    /// diffusers' <c>set_timesteps(n)</c>: the timesteps are <c>n-1, ..., 0</c> (not spread over the
    /// training range). <paramref name="numInferenceSteps"/> must be in 1..num_train_timesteps.
    /// </summary>
    public long[] Timesteps(int numInferenceSteps)
    {
        if (numInferenceSteps < 1 || numInferenceSteps > NumTrainTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                $"num_inference_steps must be between 1 and {NumTrainTimesteps} (num_train_timesteps).");
        }

        return Enumerable.Range(0, numInferenceSteps).Reverse().Select(i => (long)i).ToArray();
    }

    /// <summary>
    /// One reverse step: <c>x_{t-1} = argmax(log p(x_{t-1} | x_t) + Gumbel noise)</c>. At t = 0 the
    /// model output itself is sampled. Exactly one <c>torch.rand</c> draw of the log-probs' shape is
    /// taken from <paramref name="generator"/> on the CPU (then moved to the model's device), so a seed
    /// gives the same samples on any device.
    /// </summary>
    public Tensor Step(Tensor modelOutput, long timestep, Tensor sample, Generator? generator)
    {
        using var scope = NewDisposeScope();
        if (timestep > 0 && FusedPosteriorStep(modelOutput, timestep, sample, generator) is { } fused)
        {
            return fused.MoveToOuterDisposeScope();
        }

        Tensor logPxtMin1 = timestep == 0 ? modelOutput.alias() : QPosterior(modelOutput, sample, timestep);
        Tensor noise = GumbelNoise(logPxtMin1.shape, logPxtMin1.device, generator);
        Tensor next = GumbelMaxKernel.TryArgmax(noise, logPxtMin1) ?? noise.add_(logPxtMin1).argmax(1);
        return next.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Step"/> at t &gt; 0 through <see cref="PosteriorKernel"/>: the same operations on the same values as
    /// <see cref="QPosterior"/> followed by the Gumbel-max sample, with the transitions applied on the fly; null
    /// where the kernels do not apply (not a contiguous float32 CPU tensor, transition values that libtorch's
    /// kernels do not agree on, or the elementwise formula requested).
    /// </summary>
    private Tensor? FusedPosteriorStep(Tensor logPx0, long t, Tensor xT, Generator? generator)
    {
        if (!FusedPosterior || ElementwiseTransitions || LogTiny.Value is not float logTiny || !PosteriorKernel.Applies(logPx0, xT)
            || _cumulativeTransitions[t] is not (float hitC, float missC, float cC) || _transitions[t] is not (float hit, float miss, float c))
        {
            return null;
        }

        using var scope = NewDisposeScope();
        int[] tokens = PosteriorKernel.Tokens(xT);
        var (r, qLogSumExp) = FusedPosteriorTerms(logPx0, tokens, t, new(hitC, missC, cC));
        Tensor gumbelLogs = PosteriorKernel.GumbelLogs([logPx0.shape[0], NumEmbed, logPx0.shape[2]], generator);
        Tensor next = PosteriorKernel.GumbelArgmax(gumbelLogs, r, qLogSumExp, tokens, new(hit, miss, c), _logCumprodCt[t - 1].item<float>(), logTiny, MaskClass);
        return next.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="QPosterior"/> by <see cref="PosteriorKernel"/>, materialised (for the tests); null where the
    /// kernels do not apply.
    /// </summary>
    internal Tensor? FusedQPosterior(Tensor logPx0, Tensor xT, long t)
    {
        if (t < 1 || LogTiny.Value is not float logTiny || !PosteriorKernel.Applies(logPx0, xT)
            || _cumulativeTransitions[t] is not (float hitC, float missC, float cC) || _transitions[t] is not (float hit, float miss, float c))
        {
            return null;
        }

        using var scope = NewDisposeScope();
        int[] tokens = PosteriorKernel.Tokens(xT);
        var (r, qLogSumExp) = FusedPosteriorTerms(logPx0, tokens, t, new(hitC, missC, cC));
        return PosteriorKernel.Materialize(r, qLogSumExp, tokens, new(hit, miss, c), _logCumprodCt[t - 1].item<float>(), logTiny, MaskClass).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>r = ((log p(x0) − log q(x_t | x0)) − logsumexp + a).logaddexp(b)</c> at t − 1 and the logsumexp, as
    /// diffusers' q_posterior computes them up to its last two additions.
    /// </summary>
    private (Tensor R, Tensor LogSumExp) FusedPosteriorTerms(Tensor logPx0, int[] tokens, long t, PosteriorKernel.Transition cumulative)
    {
        using var scope = NewDisposeScope();
        Tensor q = PosteriorKernel.SubtractTransition(logPx0, tokens, cumulative, MaskClass);
        Tensor qLogSumExp = q.logsumexp(1, keepdim: true);
        PosteriorKernel.NormalizeAndShift(q, qLogSumExp, _logCumprodAt[t - 1].item<float>());
        Tensor r = q.logaddexp(_logCumprodBt[t - 1]);
        return (r.MoveToOuterDisposeScope(), qLogSumExp.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// log q(x_{t-1} | x_t, x_0) marginalised over p(x_0): diffusers' <c>q_posterior</c>.
    /// <paramref name="logPx0"/> is [B, K-1, N] (no mask class), the result is [B, K, N].
    /// </summary>
    public Tensor QPosterior(Tensor logPx0, Tensor xT, long t)
    {
        using var scope = NewDisposeScope();
        Tensor logOnehotXt = IndexToLogOnehot(xT, NumEmbed);
        Tensor logQxtGivenX0 = LogQtTransitioningToKnownClass(t, xT, logOnehotXt, cumulative: true);
        Tensor logQtGivenXtMin1 = LogQtTransitioningToKnownClass(t, xT, logOnehotXt, cumulative: false);

        Tensor q = logPx0 - logQxtGivenX0;
        Tensor qLogSumExp = q.logsumexp(1, keepdim: true);
        q = q - qLogSumExp;
        q = ApplyCumulativeTransitions(q, t - 1);
        Tensor result = q + logQtGivenXtMin1 + qLogSumExp;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' <c>index_to_log_onehot</c>: <c>log(clamp(one_hot(x).permute(0, 2, 1).float(), 1e-30))</c>, built
    /// without the int64 one-hot: log(1) = 0 at each sample's class, log(1e-30) everywhere else (computed by the
    /// same vectorised libtorch log as the reference, so the values are the same bits).
    /// </summary>
    internal static Tensor IndexToLogOnehot(Tensor x, int numClasses)
    {
        if (LogTiny.Value is not float logTiny)
        {
            // libtorch's vectorised and scalar log disagree on log(1e-30): use the formula, element by element.
            return IndexToLogOnehotReference(x, numClasses);
        }

        using var scope = NewDisposeScope();
        Tensor result = full([x.shape[0], numClasses, x.shape[1]], logTiny, float32, x.device);
        result.scatter_(1, x.unsqueeze(1), zeros(1, dtype: float32, device: x.device).expand(x.shape[0], 1, x.shape[1]));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The literal diffusers formulation of <see cref="IndexToLogOnehot"/> (kept for the tests).</summary>
    internal static Tensor IndexToLogOnehotReference(Tensor x, int numClasses)
    {
        using var onehot = nn.functional.one_hot(x, numClasses);
        using var permuted = onehot.permute(0, 2, 1);
        using var asFloat = permuted.to(float32);
        using var clamped = asFloat.clamp(min: 1e-30);
        return clamped.log();
    }

    private Tensor LogQtTransitioningToKnownClass(long t, Tensor xT, Tensor logOnehotXt, bool cumulative)
    {
        using var scope = NewDisposeScope();
        Tensor a = cumulative ? _logCumprodAt[t] : _logAt[t];
        Tensor b = cumulative ? _logCumprodBt[t] : _logBt[t];
        Tensor c = cumulative ? _logCumprodCt[t] : _logCt[t];
        Tensor maskColumns = xT.eq(MaskClass).unsqueeze(1);
        Tensor? fromMasked = cumulative ? null : logOnehotXt[.., -1, ..].unsqueeze(1);

        Tensor logQt;
        if (!ElementwiseTransitions && (cumulative ? _cumulativeTransitions : _transitions)[t] is (float hit, float miss, float cValue))
        {
            // log_onehot(x_t) holds two values, so (log_onehot + a).logaddexp(b) does too: `hit` at x_t's
            // class, `miss` elsewhere. Filled directly instead of two passes over [B, K-1, N].
            long bsz = xT.shape[0];
            long pixels = xT.shape[1];
            logQt = full([bsz, NumEmbed - 1, pixels], miss, float32, xT.device);
            Tensor rows = xT.masked_fill(maskColumns.squeeze(1), 0).unsqueeze(1);
            logQt.scatter_(1, rows, full([bsz, 1, pixels], hit, float32, xT.device));
            logQt.masked_fill_(maskColumns, cValue);
        }
        else
        {
            Tensor known = logOnehotXt[.., ..^1, ..];
            logQt = (known + a).logaddexp(b);
            logQt = where(maskColumns.expand(-1, NumEmbed - 1, -1), c, logQt);
        }

        if (fromMasked is not null)
        {
            logQt = cat([logQt, fromMasked], 1);
        }

        return logQt.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// For every entry of the tables: <c>(log_onehot + a).logaddexp(b)</c> for the two values of a log one-hot (0 and
    /// log 1e-30) and c, computed by libtorch's vectorised and scalar kernels; null where the two disagree in any
    /// bit, so that whichever kernel a large tensor's element would meet gives these values (there the elementwise
    /// formula is used instead).
    /// </summary>
    private static (float Hit, float Miss, float C)?[] TransitionValues(Tensor a, Tensor b, Tensor c)
    {
        var values = new (float, float, float)?[a.shape[0]];
        if (LogTiny.Value is not float logTiny)
        {
            return values;
        }

        using var scope = NewDisposeScope();
        Tensor known = tensor(new[] { 0f, logTiny }, float32, a.device).repeat(32);
        Tensor scalarHit = zeros(1, float32, a.device);
        Tensor scalarMiss = full(1, logTiny, float32, a.device);
        // An explicit alpha, kept alive across the calls: `x + y` passes a temporary Scalar, and these calls failed
        // now and then on a heavily loaded machine with libtorch's "c10 toFloat: Expected false to be true" (our
        // reading: the temporary was finalized while libtorch read it). Same operation, same bits.
        using Scalar one = 1f;
        for (int t = 0; t < values.Length; t++)
        {
            using var inner = NewDisposeScope();
            float[] v = known.add(a[t], one).logaddexp(b[t]).cpu().data<float>().ToArray();
            float hit = scalarHit.add(a[t], one).logaddexp(b[t]).item<float>();
            float miss = scalarMiss.add(a[t], one).logaddexp(b[t]).item<float>();
            GC.KeepAlive(one);
            bool agree = true;
            for (int i = 0; i < v.Length; i += 2)
            {
                agree &= BitConverter.SingleToInt32Bits(v[i]) == BitConverter.SingleToInt32Bits(hit)
                    && BitConverter.SingleToInt32Bits(v[i + 1]) == BitConverter.SingleToInt32Bits(miss);
            }

            values[t] = agree ? (hit, miss, c[t].item<float>()) : null;
        }

        return values;
    }

    private Tensor ApplyCumulativeTransitions(Tensor q, long t)
    {
        using var scope = NewDisposeScope();
        long bsz = q.shape[0];
        long numLatentPixels = q.shape[2];
        Tensor a = _logCumprodAt[t];
        Tensor b = _logCumprodBt[t];
        Tensor c = _logCumprodCt[t].expand(bsz, 1, numLatentPixels);
        Tensor result = cat([(q + a).logaddexp(b), c], 1);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' Gumbel noise <c>-log(-log(u + 1e-30) + 1e-30)</c> of the logits' shape, with one <c>torch.rand</c>
    /// draw from <paramref name="generator"/> on the CPU (moved to the logits' device), in place.
    /// </summary>
    internal static Tensor GumbelNoise(long[] shape, Device device, Generator? generator)
    {
        using var scope = NewDisposeScope();
        Tensor noise = rand(shape, dtype: float32, device: CPU, generator: generator);
        if (device.type != DeviceType.CPU)
        {
            noise = noise.to(device);
        }

        noise.add_(1e-30).log_().neg_().add_(1e-30).log_().neg_();
        return noise.MoveToOuterDisposeScope();
    }

    /// <summary><c>(gumbel noise + logits).argmax(1)</c> as libtorch computes it (for the tests of <see cref="GumbelMaxKernel"/>).</summary>
    internal static Tensor GumbelArgmaxReference(Tensor noise, Tensor logits)
    {
        using var sum = noise + logits;
        return sum.argmax(1);
    }

    private static Tensor LogTable(double[] values, Device device)
    {
        using var t64 = tensor(values, dtype: float64);
        using var log64 = t64.log();
        return log64.to(float32, device);
    }

    /// <summary>diffusers <c>alpha_schedules</c> (numpy float64 arithmetic, same operation order).</summary>
    internal static (double[] At, double[] Att) AlphaSchedules(int n, double start, double end)
    {
        var attRaw = new double[n + 1];
        attRaw[0] = 1;
        for (int i = 0; i < n; i++)
        {
            attRaw[i + 1] = ((double)i / (n - 1) * (end - start)) + start;
        }

        var at = new double[n];
        for (int i = 0; i < n; i++)
        {
            at[i] = attRaw[i + 1] / attRaw[i];
        }

        var att = new double[n + 1];
        Array.Copy(attRaw, 1, att, 0, n);
        att[n] = 1;
        return (at, att);
    }

    /// <summary>diffusers <c>gamma_schedules</c> (numpy float64 arithmetic, same operation order).</summary>
    internal static (double[] Ct, double[] Ctt) GammaSchedules(int n, double start, double end)
    {
        var cttRaw = new double[n + 1];
        cttRaw[0] = 0;
        for (int i = 0; i < n; i++)
        {
            cttRaw[i + 1] = ((double)i / (n - 1) * (end - start)) + start;
        }

        var ct = new double[n];
        for (int i = 0; i < n; i++)
        {
            double oneMinusCt = (1 - cttRaw[i + 1]) / (1 - cttRaw[i]);
            ct[i] = 1 - oneMinusCt;
        }

        var ctt = new double[n + 1];
        Array.Copy(cttRaw, 1, ctt, 0, n);
        ctt[n] = 0;
        return (ct, ctt);
    }

    public void Dispose()
    {
        _logAt.Dispose();
        _logBt.Dispose();
        _logCt.Dispose();
        _logCumprodAt.Dispose();
        _logCumprodBt.Dispose();
        _logCumprodCt.Dispose();
    }
}
