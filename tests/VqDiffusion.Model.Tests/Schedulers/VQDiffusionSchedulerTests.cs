using System.Text.Json;
using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Schedulers;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Schedulers;

public sealed class VQDiffusionSchedulerTests
{
    private readonly ITestOutputHelper _output;

    public VQDiffusionSchedulerTests(ITestOutputHelper output) => _output = output;

    private static VQDiffusionScheduler CreateTiny() =>
        new(ConfigFile.Load<VQDiffusionSchedulerConfig>(Path.Combine(Fixtures.TinyModel, "scheduler", "scheduler_config.json")));

    [Theory]
    [InlineData("log_at")]
    [InlineData("log_bt")]
    [InlineData("log_ct")]
    [InlineData("log_cumprod_at")]
    [InlineData("log_cumprod_bt")]
    [InlineData("log_cumprod_ct")]
    public void ScheduleTablesMatchDiffusers(string name)
    {
        var golden = Fixtures.LoadGolden("scheduler.safetensors");
        using var scheduler = CreateTiny();
        torch.Tensor actual = name switch
        {
            "log_at" => scheduler.log_at,
            "log_bt" => scheduler.log_bt,
            "log_ct" => scheduler.log_ct,
            "log_cumprod_at" => scheduler.log_cumprod_at,
            "log_cumprod_bt" => scheduler.log_cumprod_bt,
            _ => scheduler.log_cumprod_ct,
        };

        // -inf entries (log 0 at the appended end of the cumulative tables) must match as -inf.
        using var expectedInf = golden[name].isinf();
        using var actualInf = actual.isinf();
        TensorAssert.Equal(expectedInf, actualInf, name + " -inf pattern");
        using var finite = expectedInf.logical_not();
        TensorAssert.Close(golden[name].masked_select(finite), actual.masked_select(finite), 1e-6, 1e-6, name, _output);
    }

    [Fact]
    public void TimestepsMatchDiffusersSetTimesteps()
    {
        using var scheduler = CreateTiny();
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.TinyGolden, "scheduler.json")));
        foreach (var entry in doc.RootElement.GetProperty("set_timesteps").EnumerateObject())
        {
            long[] expected = entry.Value.EnumerateArray().Select(e => e.GetInt64()).ToArray();
            Assert.Equal(expected, scheduler.Timesteps(int.Parse(entry.Name, System.Globalization.CultureInfo.InvariantCulture)));
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(101)]
    public void TimestepsRejectOutOfRangeStepCounts(int steps)
    {
        using var scheduler = CreateTiny();
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.Timesteps(steps));
        Assert.Contains("between 1 and 100", ex.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(50)]
    [InlineData(99)]
    public void QPosteriorMatchesDiffusers(int t)
    {
        var transformer = Fixtures.LoadGolden("transformer.safetensors");
        var golden = Fixtures.LoadGolden("scheduler.safetensors");
        using var scheduler = CreateTiny();
        using var actual = scheduler.QPosterior(transformer[$"sample_t{t}"], transformer["latents"], t);
        var expected = golden[$"q_posterior_t{t}"];
        using var expectedInf = expected.isneginf();
        using var actualInf = actual.isneginf();
        TensorAssert.Equal(expectedInf, actualInf, $"q_posterior_t{t} -inf pattern");
        using var finite = expectedInf.logical_not();
        TensorAssert.Close(expected.masked_select(finite), actual.masked_select(finite), 1e-4, 1e-4, $"q_posterior_t{t}", _output);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(50)]
    [InlineData(99)]
    public void StepSamplesExactlyWhatDiffusersSamples(int t)
    {
        var transformer = Fixtures.LoadGolden("transformer.safetensors");
        var golden = Fixtures.LoadGolden("scheduler.safetensors");
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.TinyGolden, "scheduler.json")));
        ulong seed = doc.RootElement.GetProperty("step_seeds").GetProperty(t.ToString(System.Globalization.CultureInfo.InvariantCulture)).GetUInt64();
        using var scheduler = CreateTiny();
        using var generator = new torch.Generator(seed);
        using var actual = scheduler.Step(golden[$"step_model_output_t{t}"], t, transformer["latents"], generator);
        TensorAssert.Equal(golden[$"step_prev_sample_t{t}"], actual, $"step_prev_sample_t{t}");
    }

    [Fact]
    public void SchedulerRejectsConfigWithoutClasses()
    {
        Assert.Throws<ArgumentException>(() => new VQDiffusionScheduler(new VQDiffusionSchedulerConfig()));
    }

    [Theory]
    [InlineData(1, 65, 64)]
    [InlineData(3, 4097, 100)]
    [InlineData(2, 7, 9)]
    public void IndexToLogOnehotEqualsTheOneHotFormulationBitForBit(int batch, int classes, int pixels)
    {
        using var scope = torch.NewDisposeScope();
        var generator = new torch.Generator(5, torch.CPU);
        torch.Tensor x = torch.randint(0, classes, [batch, pixels], generator: generator);
        torch.Tensor expected = VQDiffusionScheduler.IndexToLogOnehotReference(x, classes);
        torch.Tensor actual = VQDiffusionScheduler.IndexToLogOnehot(x, classes);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(expected.eq(actual).all().item<bool>());
        Assert.Equal(batch * pixels, actual.eq(0).sum().item<long>());
    }

    [Theory]
    [InlineData(65, 100, 64, 2)]
    [InlineData(4097, 100, 256, 1)]
    [InlineData(17, 10, 9, 3)]
    public void QPosteriorWithFilledTransitionsEqualsTheElementwiseFormulaBitForBit(int classes, int steps, int pixels, int batch)
    {
        using var scope = torch.NewDisposeScope();
        var config = new VQDiffusionSchedulerConfig { NumVecClasses = classes, NumTrainTimesteps = steps };
        using var scheduler = new VQDiffusionScheduler(config);
        using var reference = new VQDiffusionScheduler(config) { ElementwiseTransitions = true };
        var generator = new torch.Generator(11, torch.CPU);
        torch.Tensor logPx0 = (torch.randn([batch, classes - 1, pixels], generator: generator) * 3).log_softmax(1);
        torch.Tensor xT = torch.randint(0, classes, [batch, pixels], generator: generator);
        xT[.., ..(pixels / 3)] = torch.tensor(classes - 1L); // a third masked
        foreach (long t in new long[] { 1, steps / 2, steps - 1 })
        {
            torch.Tensor expected = reference.QPosterior(logPx0, xT, t);
            torch.Tensor actual = scheduler.QPosterior(logPx0, xT, t);
            Assert.True(expected.eq(actual).logical_or(expected.isnan().logical_and(actual.isnan())).all().item<bool>(), $"t={t}: q_posterior differs");
        }
    }

    /// <summary>
    /// <see cref="PosteriorKernel"/> (transitions applied on the fly, the exact arithmetic fused around libtorch's
    /// logsumexp, logaddexp, uniform draw and logarithms) samples exactly what the unfused q_posterior + Gumbel-max
    /// samples, with the same generator state afterwards.
    /// </summary>
    [Theory]
    [InlineData(4097, 100, 1024, 1)]
    [InlineData(65, 100, 64, 3)]
    [InlineData(17, 10, 9, 2)]
    [InlineData(22, 10, 19, 2)] // classes and pixels past the last block of eight
    public void FusedPosteriorStepSamplesWhatTheUnfusedStepSamples(int classes, int steps, int pixels, int batch)
    {
        using var scope = torch.NewDisposeScope();
        var config = new VQDiffusionSchedulerConfig { NumVecClasses = classes, NumTrainTimesteps = steps };
        using var fused = new VQDiffusionScheduler(config);
        using var unfused = new VQDiffusionScheduler(config) { FusedPosterior = false };
        var generator = new torch.Generator(31, torch.CPU);
        // The pipeline's layout: each pixel's classes contiguous.
        torch.Tensor logPx0 = (torch.randn([batch, pixels, classes - 1], generator: generator) * 3).log_softmax(-1).clamp(min: -70).transpose(1, 2);
        logPx0[.., 3, ..] = torch.tensor(-70f);
        Assert.True(PosteriorKernel.Applies(logPx0, torch.zeros([batch, pixels], torch.int64)));
        torch.Tensor xT = torch.randint(0, classes, [batch, pixels], generator: generator);
        xT[.., ..(pixels / 3)] = torch.tensor(classes - 1L); // a third masked
        foreach (long t in new long[] { 1, 2, steps / 2, steps - 1 })
        {
            torch.Tensor? posterior = fused.FusedQPosterior(logPx0, xT, t);
            Assert.NotNull(posterior);
            TensorAssert.SameBits(unfused.QPosterior(logPx0, xT, t), posterior!, $"t={t}: q_posterior");

            using var g1 = new torch.Generator(1000 + (ulong)t, torch.CPU);
            using var g2 = new torch.Generator(1000 + (ulong)t, torch.CPU);
            torch.Tensor expected = unfused.Step(logPx0, t, xT, g1);
            torch.Tensor actual = fused.Step(logPx0, t, xT, g2);
            TensorAssert.Equal(expected, actual, $"t={t}: samples");
            TensorAssert.SameBits(torch.rand(8, generator: g1), torch.rand(8, generator: g2), $"t={t}: generator state after the step");
        }
    }

    [Theory]
    [InlineData(1, 4097, 1024, false)]
    [InlineData(3, 65, 300, true)]
    [InlineData(2, 7, 5, true)]
    public void GumbelMaxKernelEqualsLibtorchsArgmaxOfTheSum(int batch, int classes, int pixels, bool specials)
    {
        using var scope = torch.NewDisposeScope();
        var generator = new torch.Generator(21, torch.CPU);
        torch.Tensor noise = torch.rand([batch, classes, pixels], generator: generator).add_(1e-30).log_().neg_().add_(1e-30).log_().neg_();
        torch.Tensor logits = (torch.randn([batch, classes, pixels], generator: generator) * 4).round(); // many exact ties
        if (specials)
        {
            logits[.., 2, ..] = torch.tensor(float.NegativeInfinity);
            logits[0, .., 1] = torch.tensor(float.NegativeInfinity);   // a whole column of -inf: index 0
            noise[0, .., 1] = torch.tensor(0f);
            logits[^1, 3, ^1] = torch.tensor(float.NaN);              // a NaN wins where it is
            logits[^1, 5, ^1] = torch.tensor(float.NaN);
            noise[.., 4, 0] = noise[.., 3, 0].clone();                 // exact ties between classes 3 and 4
            logits[.., 4, 0] = logits[.., 3, 0].clone();
        }

        torch.Tensor expected = VQDiffusionScheduler.GumbelArgmaxReference(noise, logits);
        torch.Tensor? actual = GumbelMaxKernel.TryArgmax(noise, logits);
        Assert.NotNull(actual);
        Assert.Equal(expected.shape, actual!.shape);
        Assert.True(expected.eq(actual).all().item<bool>());
        if (specials)
        {
            Assert.Equal(0, actual[0, 1].item<long>());
            Assert.Equal(3, actual[^1, ^1].item<long>());
        }
    }
}
