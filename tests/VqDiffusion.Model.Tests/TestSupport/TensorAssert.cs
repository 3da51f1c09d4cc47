using TorchSharp;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.TestSupport;

public static class TensorAssert
{
    /// <summary>
    /// Asserts |actual − expected| ≤ atol + rtol·|expected| elementwise (numpy.allclose) and returns
    /// the max absolute error, which tests print so the measured figure is visible in the log.
    /// </summary>
    public static double Close(torch.Tensor expected, torch.Tensor actual, double atol, double rtol, string what, ITestOutputHelper? output = null)
    {
        Assert.Equal(expected.shape, actual.shape);
        using var e = expected.to(torch.float64);
        using var a = actual.to(torch.float64);
        using var diff = (a - e).abs();
        using var bound = e.abs() * rtol + atol;
        using var bad = diff > bound;
        double maxErr = diff.numel() == 0 ? 0 : diff.max().item<double>();
        long violations = bad.sum().item<long>();
        output?.WriteLine($"{what}: max |diff| = {maxErr:E3} over {diff.numel()} values (atol {atol}, rtol {rtol})");
        Assert.True(violations == 0, $"{what}: {violations} of {diff.numel()} values outside atol={atol} rtol={rtol}; max |diff| = {maxErr:E3}");
        return maxErr;
    }

    /// <summary>Asserts two integer tensors are identical.</summary>
    public static void Equal(torch.Tensor expected, torch.Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        using var ne = expected.to(torch.int64).ne(actual.to(torch.int64));
        long count = ne.sum().item<long>();
        Assert.True(count == 0, $"{what}: {count} of {expected.numel()} values differ");
    }

    /// <summary>Asserts two float32 tensors hold the same bit patterns (NaN payloads and signed zeros included).</summary>
    public static void SameBits(torch.Tensor expected, torch.Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        using var e = expected.contiguous();
        using var a = actual.contiguous();
        ReadOnlySpan<float> ev = e.data<float>().ToArray();
        ReadOnlySpan<float> av = a.data<float>().ToArray();
        int differing = 0;
        for (int i = 0; i < ev.Length; i++)
        {
            differing += BitConverter.SingleToInt32Bits(ev[i]) == BitConverter.SingleToInt32Bits(av[i]) ? 0 : 1;
        }

        Assert.True(differing == 0, $"{what}: {differing} of {ev.Length} values differ");
    }
}
