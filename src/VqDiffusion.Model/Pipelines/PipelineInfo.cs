namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// The facts of a loaded pipeline that hosts report (the server's <c>GetModelInfo</c> and logs), so that they never
/// reach into its modules.
/// </summary>
/// <param name="ModelPath">The model folder, absolute.</param>
/// <param name="LatentHeight">Latent grid rows.</param>
/// <param name="LatentWidth">Latent grid columns.</param>
/// <param name="ImageHeight">Output image height in pixels.</param>
/// <param name="ImageWidth">Output image width in pixels.</param>
/// <param name="NumCodes">VQ codebook entries (token values 0..NumCodes-1).</param>
/// <param name="NumVectorEmbeds">Token classes including the mask (NumCodes + 1).</param>
/// <param name="NumTrainTimesteps">The scheduler's T.</param>
/// <param name="MaxPromptTokens">CLIP tokens per prompt (longer prompts are cut).</param>
/// <param name="DefaultNumInferenceSteps">Steps of a request that leaves them unset under the default sampler.</param>
/// <param name="DefaultGuidanceScale">Guidance of a request that leaves it unset.</param>
/// <param name="DefaultTruncationRate">Truncation of a request that leaves it unset.</param>
/// <param name="Device">The device, as TorchSharp names it (cpu, cuda:0).</param>
/// <param name="DType">The parameter dtype name (float32, float16, bfloat16).</param>
/// <param name="LearnedClassifierFreeEmbeddings">Whether guidance uses learned negative embeddings.</param>
/// <param name="Samplers">The sampler families served, with their speeds and schedules for this model.</param>
public sealed record PipelineInfo(
    string ModelPath,
    int LatentHeight,
    int LatentWidth,
    int ImageHeight,
    int ImageWidth,
    int NumCodes,
    int NumVectorEmbeds,
    int NumTrainTimesteps,
    int MaxPromptTokens,
    int DefaultNumInferenceSteps,
    float DefaultGuidanceScale,
    float DefaultTruncationRate,
    string Device,
    string DType,
    bool LearnedClassifierFreeEmbeddings,
    IReadOnlyList<SamplerInfo> Samplers)
{
    /// <summary>Tokens per image (LatentHeight × LatentWidth).</summary>
    public int NumLatentPixels => LatentHeight * LatentWidth;
}
