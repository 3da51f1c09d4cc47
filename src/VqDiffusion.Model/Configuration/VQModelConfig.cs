using System.Text.Json.Serialization;

namespace VqDiffusion.Model.Configuration;

/// <summary>diffusers <c>VQModel</c> config (<c>vqvae/config.json</c>).</summary>
public sealed class VQModelConfig
{
    [JsonPropertyName("in_channels")]
    public int InChannels { get; set; } = 3;

    [JsonPropertyName("out_channels")]
    public int OutChannels { get; set; } = 3;

    [JsonPropertyName("down_block_types")]
    public string[] DownBlockTypes { get; set; } = ["DownEncoderBlock2D"];

    [JsonPropertyName("up_block_types")]
    public string[] UpBlockTypes { get; set; } = ["UpDecoderBlock2D"];

    [JsonPropertyName("block_out_channels")]
    public int[] BlockOutChannels { get; set; } = [64];

    [JsonPropertyName("layers_per_block")]
    public int LayersPerBlock { get; set; } = 1;

    [JsonPropertyName("act_fn")]
    public string ActFn { get; set; } = "silu";

    [JsonPropertyName("latent_channels")]
    public int LatentChannels { get; set; } = 3;

    [JsonPropertyName("sample_size")]
    public int SampleSize { get; set; } = 32;

    [JsonPropertyName("num_vq_embeddings")]
    public int NumVqEmbeddings { get; set; } = 256;

    [JsonPropertyName("norm_num_groups")]
    public int NormNumGroups { get; set; } = 32;

    [JsonPropertyName("vq_embed_dim")]
    public int? VqEmbedDim { get; set; }

    [JsonPropertyName("scaling_factor")]
    public double ScalingFactor { get; set; } = 0.18215;

    [JsonPropertyName("norm_type")]
    public string NormType { get; set; } = "group";

    [JsonPropertyName("mid_block_add_attention")]
    public bool MidBlockAddAttention { get; set; } = true;

    /// <summary>The codebook vector size (<c>vq_embed_dim</c>, or <c>latent_channels</c> when absent).</summary>
    [JsonIgnore]
    public int EffectiveVqEmbedDim => VqEmbedDim ?? LatentChannels;
}
