using System.Text.Json.Serialization;

namespace VqDiffusion.Model.Configuration;

/// <summary>diffusers <c>Transformer2DModel</c> config (<c>transformer/config.json</c>).</summary>
public sealed class Transformer2DModelConfig
{
    [JsonPropertyName("num_attention_heads")]
    public int NumAttentionHeads { get; set; } = 16;

    [JsonPropertyName("attention_head_dim")]
    public int AttentionHeadDim { get; set; } = 88;

    [JsonPropertyName("in_channels")]
    public int? InChannels { get; set; }

    [JsonPropertyName("out_channels")]
    public int? OutChannels { get; set; }

    [JsonPropertyName("num_layers")]
    public int NumLayers { get; set; } = 1;

    [JsonPropertyName("dropout")]
    public double Dropout { get; set; }

    [JsonPropertyName("norm_num_groups")]
    public int NormNumGroups { get; set; } = 32;

    [JsonPropertyName("cross_attention_dim")]
    public int? CrossAttentionDim { get; set; }

    [JsonPropertyName("attention_bias")]
    public bool AttentionBias { get; set; }

    [JsonPropertyName("sample_size")]
    public int? SampleSize { get; set; }

    [JsonPropertyName("num_vector_embeds")]
    public int? NumVectorEmbeds { get; set; }

    [JsonPropertyName("patch_size")]
    public int? PatchSize { get; set; }

    [JsonPropertyName("activation_fn")]
    public string ActivationFn { get; set; } = "geglu";

    [JsonPropertyName("num_embeds_ada_norm")]
    public int? NumEmbedsAdaNorm { get; set; }

    [JsonPropertyName("use_linear_projection")]
    public bool UseLinearProjection { get; set; }

    [JsonPropertyName("only_cross_attention")]
    public bool OnlyCrossAttention { get; set; }

    [JsonPropertyName("double_self_attention")]
    public bool DoubleSelfAttention { get; set; }

    [JsonPropertyName("upcast_attention")]
    public bool UpcastAttention { get; set; }

    [JsonPropertyName("norm_type")]
    public string NormType { get; set; } = "layer_norm";

    [JsonPropertyName("norm_elementwise_affine")]
    public bool NormElementwiseAffine { get; set; } = true;

    [JsonPropertyName("norm_eps")]
    public double NormEps { get; set; } = 1e-5;

    [JsonPropertyName("attention_type")]
    public string AttentionType { get; set; } = "default";

    /// <summary>
    /// The norm type the model really uses: diffusers switches a legacy <c>layer_norm</c> config with
    /// <c>num_embeds_ada_norm</c> set to <c>ada_norm</c> (as the published ITHQ config needs).
    /// </summary>
    [JsonIgnore]
    public string EffectiveNormType => NormType == "layer_norm" && NumEmbedsAdaNorm is not null ? "ada_norm" : NormType;

    [JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;
}
