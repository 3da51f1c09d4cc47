using TorchSharp;
using VqDiffusion.Model.Tests.TestSupport;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Tests.Transformers;

/// <summary>
/// <see cref="LogPx0Kernel"/> (float64 log-softmax a slice of pixels at a time, guidance mixed on the way out, eight
/// classes at a time) against libtorch's whole-tensor formulation, bit for bit, on shapes with and without edges
/// that the vectors do not cover.
/// </summary>
public sealed class LogPx0KernelTests
{
    public static TheoryData<int, int, int> Shapes() => new()
    {
        // rows, pixels, classes
        { 2, 1024, 4096 },
        { 2, 64, 64 },
        { 4, 37, 71 },   // edges in both directions
        { 1, 5, 3 },     // smaller than one block
        { 6, 130, 257 },
        { 32, 16, 40 },  // many rows: slices of one pixel... or a few
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void LogPx0EqualsTheWholeTensorFormulation(int rows, int pixels, int classes)
    {
        using var scope = NewDisposeScope();
        Tensor logits = Logits(rows, pixels, classes);
        Tensor expected = Reference(logits);
        Tensor? actual = LogPx0Kernel.TryLogPx0(logits);
        Assert.NotNull(actual);
        Assert.Equal(expected.shape, actual!.shape);
        Assert.True(actual.transpose(1, 2).is_contiguous(), "each pixel's classes contiguous, as diffusers' permuted log-softmax");
        AssertSameBits(expected, actual);

        // The public entry point takes the kernel.
        AssertSameBits(expected, Transformer2DModel.LogPx0(logits));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void GuidedEqualsTheMixOfTheLogProbabilities(int rows, int pixels, int classes)
    {
        if (rows % 2 != 0)
        {
            rows++;
        }

        using var scope = NewDisposeScope();
        Tensor logits = Logits(rows, pixels, classes);
        foreach (float g in new[] { 5f, 3f, 1.5f, 0.3f, 100f })
        {
            Tensor[] halves = Reference(logits).chunk(2, 0);
            Tensor expected = halves[0] + (g * (halves[1] - halves[0]));
            Tensor? actual = LogPx0Kernel.TryGuided(logits, g);
            Assert.NotNull(actual);
            Assert.Equal(expected.shape, actual!.shape);
            AssertSameBits(expected, actual);
        }
    }

    [Fact]
    public void OtherTensorsAreLeftToLibtorch()
    {
        using var scope = NewDisposeScope();
        Tensor logits = Logits(2, 8, 16);
        Assert.Null(LogPx0Kernel.TryLogPx0(logits.to(ScalarType.Float64)));
        Assert.Null(LogPx0Kernel.TryLogPx0(logits.transpose(1, 2)));
        Assert.Null(LogPx0Kernel.TryGuided(Logits(3, 8, 16), 5f));
        AssertSameBits(Reference(logits.transpose(1, 2).contiguous()), Transformer2DModel.LogPx0(logits.transpose(1, 2)));
    }

    private static Tensor Logits(int rows, int pixels, int classes)
    {
        var generator = new torch.Generator((ulong)(rows * 1000 + pixels + classes), CPU);
        return randn([rows, pixels, classes], generator: generator) * 4;
    }

    /// <summary>diffusers' arithmetic: the float64 log-softmax over the classes of the whole tensor, as float32 [R, C, N].</summary>
    private static Tensor Reference(Tensor logits) =>
        logits.to(ScalarType.Float64).log_softmax(-1).to(ScalarType.Float32).permute(0, 2, 1).contiguous();

    private static void AssertSameBits(Tensor expected, Tensor actual) => TensorAssert.SameBits(expected, actual, "log p(x0)");
}
