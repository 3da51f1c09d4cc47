using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.TestSupport;

public static class PixelAssert
{
    /// <summary>
    /// The golden tolerance for decoded uint8 pixels: exact expected; |diff| ≤ 1 allowed on fewer than
    /// 0.5% of the values (rounding at .5 in the VQ decoder differs between BLAS builds).
    /// </summary>
    public static void WithinDecoderRounding(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual, string what, ITestOutputHelper? output = null)
    {
        Assert.Equal(expected.Length, actual.Length);
        int off1 = 0;
        int worse = 0;
        int maxDiff = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            int d = Math.Abs(expected[i] - actual[i]);
            maxDiff = Math.Max(maxDiff, d);
            if (d == 1)
            {
                off1++;
            }
            else if (d > 1)
            {
                worse++;
            }
        }

        double fraction = (double)off1 / expected.Length;
        output?.WriteLine($"{what}: max |diff| = {maxDiff}, {off1} of {expected.Length} values off by 1 ({fraction:P3})");
        Assert.True(worse == 0, $"{what}: {worse} values differ by more than 1 (max {maxDiff})");
        Assert.True(fraction < 0.005, $"{what}: {off1} values ({fraction:P3}) differ by 1; at most 0.5% allowed");
    }
}
