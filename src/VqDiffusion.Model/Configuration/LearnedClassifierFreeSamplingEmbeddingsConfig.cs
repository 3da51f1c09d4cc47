using System.Text.Json.Serialization;

namespace VqDiffusion.Model.Configuration;

/// <summary>
/// Config of <c>LearnedClassifierFreeSamplingEmbeddings</c>
/// (<c>learned_classifier_free_sampling_embeddings/config.json</c>).
/// </summary>
public sealed class LearnedClassifierFreeSamplingEmbeddingsConfig
{
    [JsonPropertyName("learnable")]
    public bool? Learnable { get; set; }

    [JsonPropertyName("hidden_size")]
    public int? HiddenSize { get; set; }

    [JsonPropertyName("length")]
    public int? Length { get; set; }
}
