using TorchSharp;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>The tiny model of an improved golden set, loaded once per test class.</summary>
public sealed class ImprovedPipelineFixture : IDisposable
{
    public ImprovedPipelineFixture() => Pipeline = VQDiffusionPipeline.FromPretrained(ImprovedGoldenCases.ModelPath(ImprovedGoldenCases.GoldenDir));

    public VQDiffusionPipeline Pipeline { get; }

    public void Dispose() => Pipeline.Dispose();
}

/// <summary>
/// The vq-diffusion sampler against the genuine microsoft/VQ-Diffusion samplers (every case of the improved golden
/// set): the network's input tokens and timestep at every call, the tokens after every step (teacher-forced, so one
/// difference cannot hide the next), every multinomial pick as a set, the embeddings, the posteriors and the pixels.
/// </summary>
public sealed class VQDiffusionSamplerGoldenTests : IClassFixture<ImprovedPipelineFixture>
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly ITestOutputHelper _output;

    public VQDiffusionSamplerGoldenTests(ImprovedPipelineFixture fixture, ITestOutputHelper output)
    {
        _pipeline = fixture.Pipeline;
        _output = output;
    }

    private static string Golden => ImprovedGoldenCases.GoldenDir;

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in ImprovedGoldenCases.All(Golden))
        {
            data.Add(c.Name);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void CaseReproducesTheOriginalStepByStep(string name)
    {
        ImprovedGoldenCases.Case c = ImprovedGoldenCases.Get(Golden, name);
        var golden = ImprovedGoldenCases.Load(Golden, c.File);
        long[] stepT = golden["step_t"].data<long>().ToArray();
        torch.Tensor stepTokens = golden["step_tokens"];
        int batch = c.Request.BatchSize;
        int pixels = (int)stepTokens.shape[2];
        Assert.Equal(c.Steps, stepT.Length);

        using var trace = new RecordingTrace();
        using DenoisingRun run = _pipeline.Start(c.Request);
        run.Trace = trace;
        Assert.Equal(stepT, run.Timesteps);

        // The start: all masked, or the noised source of an edit.
        long[] start = c.PromptMajor(golden["start_tokens"].data<long>().ToArray(), pixels);
        Assert.True(start.SequenceEqual(run.Tokens()), $"{name}: the start tokens differ");

        var differences = new List<string>();
        int step = 0;
        while (!run.IsDone)
        {
            StepContext context = run.Step();
            Assert.Equal(stepT[step], context.Timestep);
            Assert.Equal(step + 1, context.CompletedSteps);
            Assert.Equal(c.Steps, context.TotalSteps);
            long[] expected = c.PromptMajor(stepTokens[step].data<long>().ToArray(), pixels);
            long[] actual = context.Tokens();
            int differing = expected.Zip(actual).Count(p => p.First != p.Second);
            if (differing > 0)
            {
                differences.Add($"step {step} (t={stepT[step]}): {differing} of {batch * pixels} tokens");
                run.ForceTokens(expected); // teacher forcing: the next step starts from the reference's state
            }

            step++;
        }

        Assert.True(differences.Count == 0, $"{name}: tokens differ from the original at {differences.Count} steps: {string.Join("; ", differences.Take(5))}");
        Assert.Equal(c.Steps, step);
        _output.WriteLine($"{name}: {step} steps x {batch} image(s): every step's tokens identical to the original");

        AssertNetworkCalls(c, golden, trace);
        AssertMultinomials(c, golden, trace);
        AssertEmbeddings(golden, trace);
        AssertLastPosterior(golden, trace);
        AssertImages(c, golden, run);
    }

    /// <summary>Teacher-forced posteriors: the reference's inputs of its first and last q_posterior call give its outputs.</summary>
    [Theory]
    [MemberData(nameof(CaseNames))]
    public void PosteriorOfTheReferenceInputsIsTheReferenceOutput(string name)
    {
        ImprovedGoldenCases.Case c = ImprovedGoldenCases.Get(Golden, name);
        var golden = ImprovedGoldenCases.Load(Golden, c.File);
        foreach (string which in new[] { "first", "last" })
        {
            long t = golden[$"q_posterior_{which}_t"].data<long>().ToArray()[0];
            using torch.Tensor actual = _pipeline.OriginalScheduler.QPosterior(golden[$"q_posterior_{which}_log_x_start"], golden[$"q_posterior_{which}_x_t"], t);
            TensorAssert.Close(golden[$"q_posterior_{which}_out"], actual, 1e-4, 1e-4, $"{name} q_posterior {which} (t={t})", _output);
        }
    }

    [Theory]
    [InlineData("log_at")]
    [InlineData("log_bt")]
    [InlineData("log_ct")]
    [InlineData("log_1_min_ct")]
    [InlineData("log_cumprod_at")]
    [InlineData("log_cumprod_bt")]
    [InlineData("log_cumprod_ct")]
    [InlineData("log_1_min_cumprod_ct")]
    public void ScheduleTablesAreTheOriginals(string table)
    {
        var golden = ImprovedGoldenCases.Load(Golden, "schedule.safetensors");
        var s = _pipeline.OriginalScheduler;
        torch.Tensor actual = table switch
        {
            "log_at" => s.log_at,
            "log_bt" => s.log_bt,
            "log_ct" => s.log_ct,
            "log_1_min_ct" => s.log_1_min_ct,
            "log_cumprod_at" => s.log_cumprod_at,
            "log_cumprod_bt" => s.log_cumprod_bt,
            "log_cumprod_ct" => s.log_cumprod_ct,
            _ => s.log_1_min_cumprod_ct,
        };
        using var expectedInf = golden[table].isinf();
        using var actualInf = actual.isinf();
        TensorAssert.Equal(expectedInf, actualInf, table + " -inf pattern");
        using var finite = expectedInf.logical_not();
        TensorAssert.Close(golden[table].masked_select(finite), actual.masked_select(finite), 1e-6, 1e-6, table, _output);
    }

    private void AssertNetworkCalls(ImprovedGoldenCases.Case c, Dictionary<string, torch.Tensor> golden, RecordingTrace trace)
    {
        torch.Tensor tokens = golden["model_call_tokens"];
        long[] t = golden["model_call_t"].data<long>().ToArray();
        byte[] uncond = golden["model_call_uncond"].data<byte>().ToArray();
        Assert.Equal(c.NetworkCalls, t.Length);
        Assert.Equal(t.Length, trace.Calls.Count);
        for (int i = 0; i < t.Length; i++)
        {
            RecordingTrace.Call call = trace.Calls[i];
            Assert.True(t[i] == call.Timestep, $"{c.Name}: network call {i}: t = {call.Timestep}, the original's {t[i]}");
            Assert.True((uncond[i] != 0) == call.Unconditional, $"{c.Name}: network call {i}: unconditional = {call.Unconditional}");

            // The inputs of a teacher-forced run are the reference's whenever the previous step was (checked above).
            long[] expected = tokens[i].data<long>().ToArray();
            Assert.True(expected.SequenceEqual(call.Tokens), $"{c.Name}: network call {i} (t={t[i]}): input tokens differ");
        }

        _output.WriteLine($"{c.Name}: {t.Length} network calls with the original's inputs, timesteps and branches");
    }

    private void AssertMultinomials(ImprovedGoldenCases.Case c, Dictionary<string, torch.Tensor> golden, RecordingTrace trace)
    {
        if (!golden.TryGetValue("multinomial_n", out torch.Tensor? counts))
        {
            Assert.Empty(trace.Picks);
            return;
        }

        long[] n = counts.data<long>().ToArray();
        long[] steps = golden["multinomial_step"].data<long>().ToArray();
        torch.Tensor scores = golden["multinomial_scores"];
        torch.Tensor selected = golden["multinomial_selected"];
        Assert.Equal(n.Length, trace.Picks.Count);
        for (int i = 0; i < n.Length; i++)
        {
            RecordingTrace.Pick pick = trace.Picks[i];
            Assert.True(steps[i] == pick.Step, $"{c.Name}: multinomial {i}: step {pick.Step}, the original's {steps[i]}");
            Assert.True(n[i] == pick.Count, $"{c.Name}: multinomial {i}: {pick.Count} picks, the original's {n[i]}");
            using var actualScores = torch.tensor(pick.Scores);
            TensorAssert.Close(scores[i], actualScores, 1e-4, 1e-4, $"{c.Name} multinomial {i} scores");
            int[] expectedSet = selected[i].data<byte>().ToArray().Select((v, p) => (v, p)).Where(x => x.v != 0).Select(x => x.p).ToArray();
            Assert.True(expectedSet.SequenceEqual(pick.Selected.Order()), $"{c.Name}: multinomial {i} (step {steps[i]}): picked [{string.Join(",", pick.Selected.Order())}], the original [{string.Join(",", expectedSet)}]");
        }

        _output.WriteLine($"{c.Name}: {n.Length} multinomial draws picked the original's positions");
    }

    private void AssertEmbeddings(Dictionary<string, torch.Tensor> golden, RecordingTrace trace)
    {
        TensorAssert.Close(golden["cond_emb"], trace.CondEmbeddings!, 2e-5, 1e-4, "cond_emb", _output);
        if (golden.TryGetValue("uncond_emb", out torch.Tensor? uncond))
        {
            TensorAssert.Close(uncond, trace.UncondEmbeddings!, 2e-5, 1e-4, "uncond_emb", _output);
        }
        else
        {
            Assert.Null(trace.UncondEmbeddings);
        }
    }

    /// <summary>
    /// The last posterior the run computed (a t = 0 step) against the reference's: its t and x_t exactly, its inputs
    /// and outputs within the manifest's q_posterior tolerance. Truncation at rate 1.0 keeps a class while a float32
    /// cumulative sum is below 1.0, so for classes of probability ~1e-7 the cut moves with the last bit of the network's
    /// output (another BLAS): such entries (−70 on one side, below log 1e-5 on the other) are counted as near-ties, and
    /// the outputs of their pixels are not compared.
    /// </summary>
    private void AssertLastPosterior(Dictionary<string, torch.Tensor> golden, RecordingTrace trace)
    {
        RecordingTrace.PosteriorCall last = trace.LastPosterior ?? trace.FirstPosterior!;
        Assert.Equal(golden["q_posterior_last_t"].data<long>().ToArray()[0], last.Timestep);
        TensorAssert.Equal(golden["q_posterior_last_x_t"], last.XT, "q_posterior_last_x_t");

        torch.Tensor expectedInput = golden["q_posterior_last_log_x_start"];
        float[] e = expectedInput.contiguous().data<float>().ToArray();
        float[] a = last.LogXStart.contiguous().data<float>().ToArray();
        long classes = expectedInput.shape[1];
        long pixels = expectedInput.shape[2];
        const float Negligible = -11.5f; // log 1e-5
        var tiedPixels = new HashSet<long>();
        int nearTies = 0;
        for (int i = 0; i < e.Length; i++)
        {
            if (Math.Abs(e[i] - a[i]) <= 1e-4 + (1e-4 * Math.Abs(e[i])))
            {
                continue;
            }

            bool nearTie = (e[i] == -70f && a[i] < Negligible) || (a[i] == -70f && e[i] < Negligible);
            Assert.True(nearTie, $"q_posterior_last_log_x_start[{i}] = {a[i]}, the original's {e[i]}");
            nearTies++;
            tiedPixels.Add(((i / (classes * pixels)) * pixels) + (i % pixels));
        }

        float[] eo = golden["q_posterior_last_out"].contiguous().data<float>().ToArray();
        float[] ao = last.Output.contiguous().data<float>().ToArray();
        double maxDiff = 0;
        for (int i = 0; i < eo.Length; i++)
        {
            if (tiedPixels.Contains(((i / (classes * pixels)) * pixels) + (i % pixels)))
            {
                continue;
            }

            double d = Math.Abs(eo[i] - ao[i]);
            maxDiff = Math.Max(maxDiff, d);
            Assert.True(d <= 1e-4 + (1e-4 * Math.Abs(eo[i])), $"q_posterior_last_out[{i}] = {ao[i]}, the original's {eo[i]}");
        }

        _output.WriteLine($"last q_posterior (t={last.Timestep}): inputs within tolerance but {nearTies} truncation near-ties in {tiedPixels.Count} pixels; outputs of the other pixels max |diff| {maxDiff:E3}");
    }

    private void AssertImages(ImprovedGoldenCases.Case c, Dictionary<string, torch.Tensor> golden, DenoisingRun run)
    {
        torch.Tensor expectedFloat = golden["images_float_nhwc"];
        int size = (int)(expectedFloat.numel() / c.Request.BatchSize);
        using var expected = torch.tensor(c.PromptMajor(expectedFloat.data<float>().ToArray(), size), expectedFloat.shape);
        using var actual = run.DecodeFloat().contiguous();
        TensorAssert.Close(expected, actual, 1e-4, 1e-4, $"{c.Name} images_float_nhwc", _output);

        byte[] expectedBytes = golden["images_uint8_nhwc"].data<byte>().ToArray();
        IReadOnlyList<GeneratedImage> images = run.Decode();
        for (int i = 0; i < images.Count; i++)
        {
            Assert.Equal(i, images[i].Index);
            Assert.Equal(i / c.Request.NumImagesPerPrompt, images[i].PromptIndex);
            PixelAssert.WithinDecoderRounding(expectedBytes.AsSpan(c.Rows[i] * size, size), images[i].Rgb, $"{c.Name} image {i}", _output);
        }
    }
}
