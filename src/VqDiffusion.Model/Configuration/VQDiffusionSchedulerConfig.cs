using System.Text.Json.Serialization;

namespace VqDiffusion.Model.Configuration;

/// <summary>diffusers <c>VQDiffusionScheduler</c> config (<c>scheduler/scheduler_config.json</c>).</summary>
public sealed class VQDiffusionSchedulerConfig
{
    /// <summary>Number of classes incl. the mask class (required by diffusers).</summary>
    [JsonPropertyName("num_vec_classes")]
    public int? NumVecClasses { get; set; }

    [JsonPropertyName("num_train_timesteps")]
    public int NumTrainTimesteps { get; set; } = 100;

    [JsonPropertyName("alpha_cum_start")]
    public double AlphaCumStart { get; set; } = 0.99999;

    [JsonPropertyName("alpha_cum_end")]
    public double AlphaCumEnd { get; set; } = 0.000009;

    [JsonPropertyName("gamma_cum_start")]
    public double GammaCumStart { get; set; } = 0.000009;

    [JsonPropertyName("gamma_cum_end")]
    public double GammaCumEnd { get; set; } = 0.99999;
}
