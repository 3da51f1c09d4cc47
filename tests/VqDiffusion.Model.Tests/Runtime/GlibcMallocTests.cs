using VqDiffusion.Model.Runtime;

namespace VqDiffusion.Model.Tests.Runtime;

public sealed class GlibcMallocTests
{
    [Fact]
    public void ConfiguresGlibcOnceAndStaysConfigured()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("VQD_MALLOC_TUNING") == "0")
        {
            Assert.False(GlibcMalloc.Configure());
            return;
        }

        // This project's Linux machines run glibc (Debian); mallopt accepts both settings there.
        Assert.True(GlibcMalloc.Configure());
        Assert.True(GlibcMalloc.Configure());
        Assert.True(GlibcMalloc.Configured);
    }
}
