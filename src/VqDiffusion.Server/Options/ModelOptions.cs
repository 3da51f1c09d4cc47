namespace VqDiffusion.Server.Options;

/// <summary>Configuration section <c>Model</c>: which diffusers folder to serve and how (checked by <see cref="ModelOptionsValidator"/>).</summary>
public sealed class ModelOptions
{
    public const string Section = "Model";

    /// <summary>Diffusers VQDiffusionPipeline folder. Empty = the small test pipeline shipped with the server.</summary>
    public string? Path { get; set; }

    /// <summary><c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; set; } = "cpu";

    /// <summary><c>float32</c>, <c>float16</c> or <c>bfloat16</c> (also <c>fp32</c>, <c>fp16</c>, <c>bf16</c>).</summary>
    public string DType { get; set; } = "float32";

    /// <summary>Weights variant to prefer (e.g. <c>fp16</c>); empty = the plain files.</summary>
    public string? Variant { get; set; }

    /// <summary>
    /// When the model cannot be loaded: true (default) stops the process with exit code 3, so that an orchestrator
    /// restarts it and shows why; false keeps it up, NOT_SERVING, every call answered UNAVAILABLE.
    /// </summary>
    public bool ExitOnLoadFailure { get; set; } = true;
}
