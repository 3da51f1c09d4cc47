using VqDiffusion.Model.Hub;

namespace VqDiffusion.Server.Options;

/// <summary>Configuration section <c>Model</c>: which diffusers folder or Hub model to serve and how (checked by <see cref="ModelOptionsValidator"/>).</summary>
public sealed class ModelOptions
{
    public const string Section = "Model";

    /// <summary>
    /// Diffusers VQDiffusionPipeline folder, or a Hugging Face Hub id (<c>org/name</c>, <c>org/name@revision</c>)
    /// resolved through the Hub cache. Empty = the small test pipeline shipped with the server.
    /// </summary>
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

    /// <summary>Hub cache folder; empty = huggingface_hub's (<c>HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>).</summary>
    public string? HubCache { get; set; }

    /// <summary>Hub endpoint; empty = <c>HF_ENDPOINT</c>, else https://huggingface.co.</summary>
    public string? HubEndpoint { get; set; }

    /// <summary>Hub token for gated or private repositories; empty = <c>HF_TOKEN</c>, else the token file <c>$HF_HOME/token</c>. Never logged.</summary>
    public string? HubToken { get; set; }

    /// <summary>Resolve Hub ids from the cache only; unset = <c>HF_HUB_OFFLINE</c>.</summary>
    public bool? HubOffline { get; set; }

    /// <summary>The Hub settings: these keys where set, huggingface_hub's environment variables otherwise.</summary>
    public HubOptions ToHubOptions(Func<string, string?>? environment = null)
    {
        HubOptions fromEnvironment = HubOptions.FromEnvironment(environment);
        return fromEnvironment with
        {
            CacheDir = string.IsNullOrWhiteSpace(HubCache) ? fromEnvironment.CacheDir : HubCache,
            Endpoint = string.IsNullOrWhiteSpace(HubEndpoint) ? fromEnvironment.Endpoint : HubEndpoint.TrimEnd('/'),
            Token = string.IsNullOrWhiteSpace(HubToken) ? fromEnvironment.Token : HubToken.Trim(),
            Offline = HubOffline ?? fromEnvironment.Offline,
        };
    }
}
