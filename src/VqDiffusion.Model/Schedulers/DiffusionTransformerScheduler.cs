using TorchSharp;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Schedulers;

/// <summary>
/// The schedule and the one-step math of the original VQ-Diffusion code (microsoft/VQ-Diffusion,
/// <c>image_synthesis/modeling/transformers/diffusion_transformer.py</c>, class <c>DiffusionTransformer</c>):
/// <c>q_pred</c>, <c>q_pred_one_timestep</c>, <c>q_posterior</c>, <c>q_sample</c> and the Gumbel draw
/// <c>log_sample_categorical</c>, on log-probabilities <c>[B, K, N]</c> that include the mask class (row K − 1).
/// </summary>
/// <remarks>
/// Where the original differs from diffusers' <see cref="VQDiffusionScheduler"/> (same tables, other operations):
/// the cumulative tables have an entry T for <c>t − 1 = −1</c> (at = 1, bt = ct = 0), so <see cref="QPosterior"/> is
/// defined at t = 0 too; the mask row of <c>q_pred</c> uses <c>log(1 − ct)</c>; <c>log_add_exp</c> is the original's
/// <c>max + log(exp(a − max) + exp(b − max))</c>, not libtorch's <c>logaddexp</c>; and the result is clamped to
/// [−70, 0]. The operations are the original's, in its order, on tensors of its shapes and layouts (contiguous
/// <c>[B, K, N]</c>), so that libtorch's reductions add in the same order. Stateless: one instance serves every run.
/// </remarks>
public sealed class DiffusionTransformerScheduler : IDisposable
{
    private readonly Tensor _logAt;
    private readonly Tensor _logBt;
    private readonly Tensor _logCt;
    private readonly Tensor _log1MinCt;
    private readonly Tensor _logCumprodAt;
    private readonly Tensor _logCumprodBt;
    private readonly Tensor _logCumprodCt;
    private readonly Tensor _log1MinCumprodCt;

    public DiffusionTransformerScheduler(VQDiffusionSchedulerConfig config, Device? device = null)
    {
        if (config.NumVecClasses is not int numClasses || numClasses < 2)
        {
            throw new ArgumentException("num_vec_classes must be set and at least 2 (codes + the mask class).", nameof(config));
        }

        if (config.NumTrainTimesteps < 2)
        {
            throw new ArgumentException("num_train_timesteps must be at least 2.", nameof(config));
        }

        NumClasses = numClasses;
        NumTimesteps = config.NumTrainTimesteps;
        Device target = device ?? CPU;

        // alpha_schedule(T, N = num_classes - 1): the same float64 arithmetic as diffusers' scheduler (the tables are
        // bit-identical to its), then torch.log in float64 and .float().
        var (at, att) = VQDiffusionScheduler.AlphaSchedules(NumTimesteps, config.AlphaCumStart, config.AlphaCumEnd);
        var (ct, ctt) = VQDiffusionScheduler.GammaSchedules(NumTimesteps, config.GammaCumStart, config.GammaCumEnd);
        int n = numClasses - 1;
        double[] bt = at.Select((a, i) => (1 - a - ct[i]) / n).ToArray();
        double[] btt = att.Select((a, i) => (1 - a - ctt[i]) / n).ToArray();

        using var scope = NewDisposeScope();
        Tensor logCt64 = tensor(ct, dtype: float64).log();
        Tensor logCumprodCt64 = tensor(ctt, dtype: float64).log();
        _logAt = Table(tensor(at, dtype: float64).log(), target);
        _logBt = Table(tensor(bt, dtype: float64).log(), target);
        _logCt = Table(logCt64, target);
        _log1MinCt = Table(Log1MinA(logCt64), target);
        _logCumprodAt = Table(tensor(att, dtype: float64).log(), target);
        _logCumprodBt = Table(tensor(btt, dtype: float64).log(), target);
        _logCumprodCt = Table(logCumprodCt64, target);
        _log1MinCumprodCt = Table(Log1MinA(logCumprodCt64), target);
    }

    /// <summary>Classes including the mask class (K); the mask class is K − 1.</summary>
    public int NumClasses { get; }

    public int MaskClass => NumClasses - 1;

    /// <summary>Training timesteps (T).</summary>
    public int NumTimesteps { get; }

#pragma warning disable SA1300, IDE1006 // buffer names as in the original's register_buffer calls
    public Tensor log_at => _logAt;

    public Tensor log_bt => _logBt;

    public Tensor log_ct => _logCt;

    public Tensor log_1_min_ct => _log1MinCt;

    /// <summary>T + 1 entries; index T serves t − 1 = −1.</summary>
    public Tensor log_cumprod_at => _logCumprodAt;

    public Tensor log_cumprod_bt => _logCumprodBt;

    public Tensor log_cumprod_ct => _logCumprodCt;

    public Tensor log_1_min_cumprod_ct => _log1MinCumprodCt;
#pragma warning restore SA1300, IDE1006

    /// <summary>
    /// <c>q_pred(log_x_start, t)</c> = log q(x_t | x_0) for log-probabilities <paramref name="logXStart"/> [B, K, N];
    /// <paramref name="t"/> may be −1 (wrapped to index T, as the original's <c>(t + T + 1) % (T + 1)</c>).
    /// </summary>
    public Tensor QPred(Tensor logXStart, long t)
    {
        long index = (t + NumTimesteps + 1) % (NumTimesteps + 1);
        using var scope = NewDisposeScope();
        Tensor known = LogAddExp(logXStart[.., ..^1, ..] + Extract(_logCumprodAt, index), Extract(_logCumprodBt, index));
        Tensor maskRow = LogAddExp(logXStart[.., ^1.., ..] + Extract(_log1MinCumprodCt, index), Extract(_logCumprodCt, index));
        return cat([known, maskRow], 1).MoveToOuterDisposeScope();
    }

    /// <summary><c>q_pred_one_timestep(log_x_t, t)</c> = log q(x_t | x_{t−1}), [B, K, N].</summary>
    public Tensor QPredOneTimestep(Tensor logXt, long t)
    {
        using var scope = NewDisposeScope();
        Tensor known = LogAddExp(logXt[.., ..^1, ..] + Extract(_logAt, t), Extract(_logBt, t));
        Tensor maskRow = LogAddExp(logXt[.., ^1.., ..] + Extract(_log1MinCt, t), Extract(_logCt, t));
        return cat([known, maskRow], 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The original's <c>q_posterior(log_x_start, log_x_t, t)</c>: log p(x_{t−1} | x_t) marginalised over the predicted
    /// x_0, clamped to [−70, 0], <c>[B, K, N]</c> contiguous. <paramref name="logXStart"/> is the (guided, truncated)
    /// prediction <c>[B, K, N]</c> with its −70 mask row; <paramref name="xT"/> the tokens [B, N]; 0 ≤ t &lt; T (at t = 0
    /// the tables' entry T stands for t − 1).
    /// </summary>
    public Tensor QPosterior(Tensor logXStart, Tensor xT, long t)
    {
        if (t < 0 || t >= NumTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(t), t, $"t must be in 0..{NumTimesteps - 1}");
        }

        using var scope = NewDisposeScope();
        long batch = logXStart.shape[0];
        long pixels = logXStart.shape[2];
        Tensor logXt = IndexToLogOnehot(xT);
        Tensor mask = xT.eq(MaskClass).unsqueeze(1);
        Tensor notMask = mask.logical_not();
        Tensor logOneVector = zeros([batch, 1, 1], float32, xT.device);
        Tensor logZeroVector = (logOneVector + 1.0e-30).log().expand(-1, -1, pixels);

        // q(x_t | x_0) over the known classes; where x_t is the mask, log ct~.
        Tensor logQt = QPred(logXt, t)[.., ..^1, ..];
        Tensor ctCumprodVector = Extract(_logCumprodCt, t, batch).expand(-1, NumClasses - 1, -1);
        logQt = (notMask * logQt) + (mask * ctCumprodVector);

        // q(x_t | x_{t-1}); where x_t is the mask, log ct for the known classes and log 1 for the mask.
        Tensor logQtOneTimestep = QPredOneTimestep(logXt, t);
        logQtOneTimestep = cat([logQtOneTimestep[.., ..^1, ..], logZeroVector], 1);
        Tensor ctVector = cat([Extract(_logCt, t, batch).expand(-1, NumClasses - 1, -1), logOneVector], 1);
        logQtOneTimestep = (notMask * logQtOneTimestep) + (mask * ctVector);

        Tensor q = logXStart[.., ..^1, ..] - logQt;
        q = cat([q, logZeroVector], 1);
        Tensor qLogSumExp = q.logsumexp(1, keepdim: true);
        q = q - qLogSumExp;
        Tensor result = QPred(q, t - 1) + logQtOneTimestep + qLogSumExp;
        return result.clamp(-70, 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>q_sample(index_to_log_onehot(x0), t)</c>: x_t ~ q(x_t | x_0) for tokens <paramref name="x0"/> [B, N], one
    /// <c>torch.rand</c> draw [B, K, N] from <paramref name="generator"/>. Returns the sampled tokens [B, N].
    /// </summary>
    public Tensor QSample(Tensor x0, long t, Generator? generator)
    {
        using var scope = NewDisposeScope();
        Tensor logProbs = QPred(IndexToLogOnehot(x0), t);
        return LogSampleCategorical(logProbs, generator).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>log_sample_categorical(logits)</c> as indices: <c>argmax(−log(−log(u + 1e-30) + 1e-30) + logits, dim=1)</c>
    /// with <c>u = torch.rand_like(logits)</c> drawn from <paramref name="generator"/> on the CPU.
    /// </summary>
    public static Tensor LogSampleCategorical(Tensor logits, Generator? generator)
    {
        using var scope = NewDisposeScope();
        Tensor noise = VQDiffusionScheduler.GumbelNoise(logits.shape, logits.device, generator);
        Tensor sample = GumbelMaxKernel.TryArgmax(noise, logits) ?? (noise + logits).argmax(1);
        return sample.MoveToOuterDisposeScope();
    }

    /// <summary><c>index_to_log_onehot(x, num_classes)</c>: 0 at each token's class, log(1e-30) elsewhere, [B, K, N].</summary>
    public Tensor IndexToLogOnehot(Tensor x) => VQDiffusionScheduler.IndexToLogOnehot(x, NumClasses);

    /// <summary>The original's <c>log_add_exp(a, b) = max + log(exp(a − max) + exp(b − max))</c>.</summary>
    internal static Tensor LogAddExp(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        Tensor maximum = torch.maximum(a, b);
        Tensor result = maximum + ((a - maximum).exp() + (b - maximum).exp()).log();
        return result.MoveToOuterDisposeScope();
    }

    /// <summary><c>extract(a, t, x_shape)</c> for a batch whose timesteps are all <paramref name="t"/>: [batch, 1, 1].</summary>
    private static Tensor Extract(Tensor table, long t, long batch = 1) => table[t].reshape(1, 1, 1).expand(batch, 1, 1);

    /// <summary><c>log_1_min_a(a) = log(1 − exp(a) + 1e-40)</c>, in float64.</summary>
    private static Tensor Log1MinA(Tensor a) => (1 - a.exp() + 1e-40).log();

    private static Tensor Table(Tensor log64, Device device) => log64.to(float32, device).DetachFromDisposeScope();

    public void Dispose()
    {
        _logAt.Dispose();
        _logBt.Dispose();
        _logCt.Dispose();
        _log1MinCt.Dispose();
        _logCumprodAt.Dispose();
        _logCumprodBt.Dispose();
        _logCumprodCt.Dispose();
        _log1MinCumprodCt.Dispose();
    }
}
