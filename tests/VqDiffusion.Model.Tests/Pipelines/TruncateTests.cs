using TorchSharp;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>
/// The sort-along-rows, scatter-back <see cref="VQDiffusionPipeline.Truncate"/> against diffusers' formulation
/// (sort along the class axis, cumsum, <c>gather(argsort(indices))</c>), bit for bit, on random inputs with and
/// without ties. The golden comparison with diffusers itself is in <see cref="VQDiffusionPipelineTests"/>.
/// </summary>
public sealed class TruncateTests
{
    private readonly ITestOutputHelper _output;

    public TruncateTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<int, int, int, float, float, bool> Cases() => new()
    {
        // batch, classes, pixels, logit scale, rate, quantised logits (many exact ties)
        { 2, 257, 64, 3f, 1.0f, false },
        { 2, 257, 64, 3f, 0.86f, false },
        { 1, 4096, 32, 4f, 0.86f, false },
        { 1, 4096, 32, 4f, 1.0f, false },
        { 3, 100, 16, 1f, 0.5f, true },
        { 3, 100, 16, 1f, 0.9f, true },
        { 2, 64, 40, 0f, 0.5f, false },      // all classes equal: every row one big tie
        { 2, 64, 40, 0f, 1.0f, false },
        { 2, 500, 20, 8f, 0.0001f, false },
        { 2, 500, 20, 8f, 0.9999999f, true },
        { 1, 33, 9, 2f, 0.3f, true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EqualsTheArgsortFormulation(int batch, int classes, int pixels, float scale, float rate, bool quantised)
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(1234 + (ulong)classes, CPU);
        Tensor logits = randn([batch, classes, pixels], generator: generator) * scale;
        if (quantised)
        {
            logits = (logits * 2).round() / 2;
        }

        Tensor logP = logits.log_softmax(1);
        Tensor expected = Reference(logP, rate);
        Tensor actual = VQDiffusionPipeline.Truncate(logP, rate);

        Assert.Equal(expected.shape, actual.shape);
        Assert.True(actual.transpose(1, 2).is_contiguous(), "each pixel's classes contiguous (the pipeline's layout)");
        long dropped = expected.isneginf().sum().item<long>();
        _output.WriteLine($"[{batch}, {classes}, {pixels}] rate {rate}: {dropped} of {logP.numel()} dropped");
        Assert.True(Same(expected.isneginf(), actual.isneginf()), "the -inf pattern differs");
        Tensor kept = expected.isfinite();
        Assert.True(Same(expected.masked_select(kept), actual.masked_select(kept)), "kept values differ");
        Assert.True(actual.isfinite().any(1).all().item<bool>(), "every pixel keeps at least one class");
    }

    [Fact]
    public void RandomRatesMatchTheArgsortFormulation()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(7, CPU);
        var rng = new Random(7);
        for (int i = 0; i < 20; i++)
        {
            Tensor logits = randn([2, 300, 24], generator: generator) * (float)(rng.NextDouble() * 6);
            if (i % 2 == 0)
            {
                logits = logits.round();
            }

            Tensor logP = logits.log_softmax(1);
            float rate = i == 0 ? 1.0f : (float)rng.NextDouble();
            rate = Math.Max(rate, 1e-6f);
            Tensor expected = Reference(logP, rate);
            Tensor actual = VQDiffusionPipeline.Truncate(logP, rate);
            Assert.True(Same(expected.isneginf(), actual.isneginf()), $"rate {rate}: the -inf pattern differs");
            Tensor kept = expected.isfinite();
            Assert.True(Same(expected.masked_select(kept), actual.masked_select(kept)), $"rate {rate}: kept values differ");
        }
    }

    [Fact]
    public void OnlyTiesStraddlingTheCutGoThroughTheSort()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(3, CPU);

        // Distinct probabilities: every pixel's cut comes from the kernel.
        Tensor distinct = (randn([2, 512, 48], generator: generator) * 3).log_softmax(1).exp();
        float[] thresholds = TruncationKernel.Thresholds(Rows(distinct), 0.86f);
        Assert.DoesNotContain(thresholds, float.IsNaN);

        // Uniform rows: at rate 0.5 the cut falls inside the one tie group (the sort decides); at rate 1.0 the
        // partial sums of 1/64 reach 1.0 only at the last class: the cut is after the whole group, keep p >= 1/64.
        Tensor uniform = zeros([1, 64, 8]).log_softmax(1).exp();
        Assert.All(TruncationKernel.Thresholds(Rows(uniform), 0.5f), t => Assert.True(float.IsNaN(t)));
        Assert.All(TruncationKernel.Thresholds(Rows(uniform), 1.0f), t => Assert.Equal(1f / 64, t));

        // A tie group entirely kept: two classes of 0.3 and the rest small, rate 0.5 → the cut is after both.
        Tensor p = full([1, 10, 1], 0.05f);
        p[0, 0, 0] = tensor(0.3f);
        p[0, 1, 0] = tensor(0.3f);
        Assert.Equal(0.3f, TruncationKernel.Thresholds(Rows(p), 0.5f)[0]);
    }

    public static TheoryData<string, int, int, float> KernelCases() => new()
    {
        // distribution, classes, pixels, rate
        { "peaked", 4096, 64, 0.86f },
        { "peaked", 4096, 64, 1.0f },
        { "flat", 4096, 64, 0.86f },
        { "flat", 4096, 64, 1.0f },
        { "flat", 4096, 64, 0.5f },
        { "ties", 4096, 32, 0.9f },
        { "ties", 300, 64, 0.3f },
        { "uniform", 4096, 8, 0.5f },
        { "uniform", 4096, 8, 1.0f },
        { "dyadic", 1024, 16, 0.75f },
        { "dyadic", 1024, 16, 0.5f },
        { "dyadic", 1024, 16, 1.0f },
        { "peaked", 65, 64, 0.0001f },
        { "tiny", 4096, 16, 1.0f },
    };

    /// <summary>
    /// The bucketed search for the cut (<see cref="TruncationKernel.Thresholds(Tensor, float)"/>) gives exactly the
    /// thresholds of the exact replay (a full radix sort and libtorch's accumulation rank by rank), including the
    /// NaN of tie groups that straddle the cut and partial sums that land exactly on the rate.
    /// </summary>
    [Theory]
    [MemberData(nameof(KernelCases))]
    public void KernelThresholdsEqualTheExactReplay(string distribution, int classes, int pixels, float rate)
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(99 + (ulong)classes + (ulong)pixels, CPU);
        Tensor p = distribution switch
        {
            "peaked" => (randn([2, classes, pixels], generator: generator) * 6).log_softmax(1).exp(),
            "flat" => (randn([2, classes, pixels], generator: generator) * 0.3).log_softmax(1).exp(),
            "ties" => ((randn([2, classes, pixels], generator: generator) * 2).round() / 2).log_softmax(1).exp(),
            "uniform" => zeros([1, classes, pixels]).log_softmax(1).exp(),

            // Powers of two: the partial sums are exact and land on rates such as 0.5 and 0.75.
            "dyadic" => pow(2f, (randint(1, 12, [1, classes, pixels], generator: generator) * -1).to(ScalarType.Float32)),

            // Most of the mass in one class, the rest near 1e-8: the cut at rate 1.0 falls in the tail.
            _ => Tail(classes, pixels, generator),
        };

        float[] expected = TruncationKernel.Thresholds(Rows(p), rate, exact: true);
        float[] actual = TruncationKernel.Thresholds(Rows(p), rate);
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));
        _output.WriteLine($"{distribution} [{classes}, {pixels}] rate {rate}: {expected.Count(float.IsNaN)} tie pixels, {expected.Count(t => t < 0)} keep all");
    }

    /// <summary>
    /// A partial sum exactly halfway between two float32 values next to the rate: the decision rests on the last
    /// bit of the double accumulator and on round-half-even, so the bucketed search hands the pixel to the exact
    /// replay, whose result is diffusers'.
    /// </summary>
    [Fact]
    public void PartialSumsOnTheRoundingBoundaryAreReplayedExactly()
    {
        using var scope = NewDisposeScope();
        const int Classes = 64;
        float second = 0.25f - MathF.Pow(2, -25);              // 0.5 + second = 0.75 − 2⁻²⁵: the midpoint below 0.75f
        float rest = (0.25f + MathF.Pow(2, -25)) / (Classes - 2);
        Tensor p = full([1, Classes, 3], rest);
        p[0, 0, ..] = tensor(0.5f);
        p[0, 1, ..] = tensor(second);
        long before = TruncationKernel.ExactReplays;
        float[] actual = TruncationKernel.Thresholds(Rows(p), 0.75f);
        Assert.True(TruncationKernel.ExactReplays - before >= 3, "the boundary pixels must be replayed exactly");
        Assert.Equal(TruncationKernel.Thresholds(Rows(p), 0.75f, exact: true), actual);

        Tensor logP = p.log();
        Tensor expected = Reference(logP, 0.75f);
        Assert.True(Same(expected.isneginf(), VQDiffusionPipeline.Truncate(logP, 0.75f).isneginf()));
    }

    [Theory]
    [InlineData(0.86f)]
    [InlineData(1.0f)]
    [InlineData(0.5f)]
    public void TruncateWithClampEqualsTruncateThenClamp(float rate)
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(17, CPU);
        Tensor logits = randn([2, 257, 48], generator: generator) * 3;
        logits[.., .., ..8] = logits[.., .., ..8].round(); // tie pixels through the sort
        Tensor logP = logits.log_softmax(1);
        logP[0, 5, 3] = tensor(-90f);                       // below the clamp, kept or dropped
        Tensor expected = VQDiffusionPipeline.Truncate(logP, rate).clamp(min: -70);
        Tensor actual = VQDiffusionPipeline.Truncate(logP, rate, clampMin: -70);
        TensorAssert.SameBits(expected, actual, $"rate {rate}");
    }

    private static Tensor Tail(int classes, int pixels, torch.Generator generator)
    {
        Tensor p = rand([1, classes, pixels], generator: generator) * 2e-8;
        p[0, 0, ..] = 1 - p[0, 1.., ..].sum(0);
        return p;
    }

    /// <summary>[B, K, N] probabilities as the kernel reads them: [B, N, K], each pixel's classes contiguous.</summary>
    private static Tensor Rows(Tensor p) => p.transpose(1, 2).contiguous();

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>diffusers' <c>VQDiffusionPipeline.truncate</c>, literally.</summary>
    private static Tensor Reference(Tensor logPx0, float truncationRate)
    {
        var (sortedLogPx0, indices) = logPx0.sort(1, descending: true);
        Tensor keepMask = sortedLogPx0.exp().cumsum(1).lt(truncationRate);
        Tensor allTrue = ones_like(keepMask[.., 0..1, ..]);
        keepMask = cat([allTrue, keepMask], 1)[.., ..^1, ..];
        keepMask = keepMask.gather(1, indices.argsort(1));
        return logPx0.masked_fill(keepMask.logical_not(), float.NegativeInfinity);
    }
}
