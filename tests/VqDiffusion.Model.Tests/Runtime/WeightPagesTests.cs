using System.Globalization;
using TorchSharp;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Runtime;
using VqDiffusion.Model.Tests.TestSupport;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Runtime;

public sealed class WeightPagesTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PrefetchBringsAMappedFileIntoTheProcessAndLeavesItsValues(bool madvise)
    {
        using var dir = new TempDirectory();
        string path = dir.File("weights.bin");
        const int Floats = 32 << 20; // 128 MB
        var values = new float[Floats];
        for (int i = 0; i < Floats; i += 1024)
        {
            values[i] = i;
        }

        File.WriteAllBytes(path, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        using Tensor mapped = torch.from_file(path, shared: false, size: Floats, dtype: ScalarType.Float32);

        double before = RssMiB();
        long bytes = WeightPages.Prefetch([mapped], madvise);
        double grown = RssMiB() - before;

        Assert.Equal(Floats * 4L, bytes);
        Assert.True(grown >= 100, $"RSS grew by {grown:F0} MiB, expected the 128 MB mapping to become resident");
        Assert.Equal(1024f * 5, mapped[1024 * 5].item<float>());
        Assert.Equal(0f, mapped[1].item<float>());
    }

    [Fact]
    public void PrefetchSkipsTensorsItCannotReadThroughOnePointer()
    {
        using var scope = NewDisposeScope();
        Tensor contiguous = ones(1000);
        Tensor strided = ones(10, 10).t();
        Tensor empty = zeros(0);

        Assert.Equal(4000, WeightPages.Prefetch([contiguous, strided, empty]));
    }

    [Fact]
    public void PipelineWeightsAreEveryParameterAndBufferOfItsModules()
    {
        using var pipeline = VQDiffusionPipeline.FromPretrained(Fixtures.TinyModel);
        long expected = new nn.Module[] { pipeline.text_encoder, pipeline.transformer, pipeline.vqvae, pipeline.learned_classifier_free_sampling_embeddings }
            .Sum(m => m.parameters().Sum(p => p.numel() * p.ElementSize) + m.buffers().Sum(b => b.numel() * b.ElementSize));

        Assert.Equal(expected, pipeline.Weights().Sum(t => t.numel() * t.ElementSize));
        Assert.Equal(expected, WeightPages.Prefetch(pipeline.Weights()));
    }

    private static double RssMiB()
    {
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
    }
}
