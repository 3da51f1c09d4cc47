using TorchSharp;

namespace VqDiffusion.Model.Tests;

public sealed class RngProbeTests
{
    [Fact]
    public void TorchLoads()
    {
        using var g = new torch.Generator(0);
        using var t = torch.rand(new long[] { 3 }, generator: g);
        Assert.Equal(3, t.numel());
    }
}
