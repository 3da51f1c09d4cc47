using TorchSharp;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Transformers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Pipelines;

/// <summary>
/// Several runs stepped with one transformer forward (<see cref="DenoisingRun.StepTogether"/>): the per-sample
/// timestep of AdaLayerNorm, and the agreement of every golden run's tokens with diffusers when all eight golden
/// runs are denoised together.
/// </summary>
public sealed class BatchedStepTests : IClassFixture<TinyPipelineFixture>
{
    private readonly VQDiffusionPipeline _pipeline;
    private readonly ITestOutputHelper _output;

    public BatchedStepTests(TinyPipelineFixture fixture, ITestOutputHelper output)
    {
        _pipeline = fixture.Pipeline;
        _output = output;
    }

    [Fact]
    public void PerSampleTimestepsMatchEachSampleWithItsOwnTimestep()
    {
        using var scope = NewDisposeScope();
        var config = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(Fixtures.TinyModel, "transformer", "config.json"));
        var golden = Fixtures.LoadGolden("transformer.safetensors");
        Tensor latents = golden["latents"];
        Tensor encoder = golden["encoder_hidden_states"];
        long batch = latents.shape[0];
        long[] steps = Enumerable.Range(0, (int)batch).Select(i => (long)((i * 37) + 3) % 100).ToArray();
        Tensor together = _pipeline.transformer.ForwardLogits(latents, encoder, tensor(steps, [batch, 1]));
        for (int i = 0; i < batch; i++)
        {
            Tensor alone = _pipeline.transformer.ForwardLogits(latents.narrow(0, i, 1), encoder.narrow(0, i, 1), tensor(steps[i]));
            TensorAssert.Close(alone, together.narrow(0, i, 1), 1e-5, 1e-5, $"sample {i} at t={steps[i]}", _output);
        }

        Assert.Equal(config.NumVectorEmbeds!.Value - 1L, together.shape[2]);
    }

    [Fact]
    public void AllGoldenRunsDenoisedTogetherAgreeWithDiffusers()
    {
        var goldenRuns = GoldenPipelineRuns.All(Fixtures.TinyGolden);
        var runs = goldenRuns.Select(r => _pipeline.Start(r.Request)).ToList();
        var expected = goldenRuns.Select(r => Fixtures.LoadGolden(r.File)["step_samples"]).ToList();
        var identical = new long[runs.Count];
        var total = new long[runs.Count];
        var firstDifference = new int?[runs.Count];
        try
        {
            while (runs.Any(r => !r.IsDone))
            {
                var active = Enumerable.Range(0, runs.Count).Where(i => !runs[i].IsDone).ToList();
                var results = DenoisingRun.StepTogether(active.Select(i => runs[i]).ToList());
                for (int a = 0; a < active.Count; a++)
                {
                    int i = active[a];
                    Assert.Null(results[a].Error);
                    StepContext step = results[a].Step!;
                    long[] tokens = step.Tokens();
                    long[] golden = expected[i][step.CompletedSteps - 1].data<long>().ToArray();
                    int same = tokens.Zip(golden).Count(p => p.First == p.Second);
                    identical[i] += same;
                    total[i] += tokens.Length;
                    if (same != tokens.Length && firstDifference[i] is null)
                    {
                        firstDifference[i] = step.CompletedSteps;
                    }
                }
            }

            for (int i = 0; i < runs.Count; i++)
            {
                _output.WriteLine($"{goldenRuns[i].Name}: {identical[i]} of {total[i]} step tokens identical to diffusers ({100.0 * identical[i] / total[i]:F2} %)"
                    + (firstDifference[i] is int s ? $", first difference at step {s}" : ", every step identical"));
                Assert.Equal(goldenRuns[i].Request.BatchSize, runs[i].Decode().Count);
            }

            double overall = (double)identical.Sum() / total.Sum();
            _output.WriteLine($"all runs together: {100 * overall:F3} % of step tokens identical to diffusers");
            Assert.True(overall > 0.9, $"batched stepping agrees with diffusers on only {overall:P2} of the tokens");
        }
        finally
        {
            runs.ForEach(r => r.Dispose());
        }
    }
}
