using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>The tiny pipeline, loaded once per test class that uses it.</summary>
public sealed class TinyPipelineFixture : IDisposable
{
    public TinyPipelineFixture() => Pipeline = VQDiffusionPipeline.FromPretrained(Fixtures.TinyModel);

    public VQDiffusionPipeline Pipeline { get; }

    public void Dispose() => Pipeline.Dispose();
}
