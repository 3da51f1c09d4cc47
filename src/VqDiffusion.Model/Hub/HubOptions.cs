namespace VqDiffusion.Model.Hub;

/// <summary>
/// Where and how Hub model ids are resolved: the cache folder, the endpoint, the token and offline mode, with
/// huggingface_hub's environment variables as defaults (<see cref="FromEnvironment"/>). Passed explicitly, so a
/// caller (or a test) never has to change the process environment.
/// </summary>
public sealed record HubOptions
{
    /// <summary>huggingface_hub's default endpoint.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>The cache folder (huggingface_hub's <c>HF_HUB_CACHE</c>), holding <c>models--org--name</c> folders.</summary>
    public required string CacheDir { get; init; }

    /// <summary>The Hub's base URL (<c>HF_ENDPOINT</c>), without a trailing slash.</summary>
    public string Endpoint { get; init; } = DefaultEndpoint;

    /// <summary>A user access token, sent as <c>authorization: Bearer …</c> to the endpoint (never logged); null = none.</summary>
    public string? Token { get; init; }

    /// <summary><c>HF_HUB_OFFLINE=1</c>: never touch the network, resolve from the cache only.</summary>
    public bool Offline { get; init; }

    /// <summary>Per-request timeout of the metadata calls and of each read of a download.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Attempts of one file download when the connection breaks (each resumes with a Range request).</summary>
    public int DownloadAttempts { get; init; } = 5;

    /// <summary>
    /// The options huggingface_hub would use (<c>constants.py</c>): cache <c>HF_HUB_CACHE</c> (or the older
    /// <c>HUGGINGFACE_HUB_CACHE</c>), else <c>$HF_HOME/hub</c>, with <c>HF_HOME</c> defaulting to
    /// <c>$XDG_CACHE_HOME/huggingface</c> and that to <c>~/.cache/huggingface</c>; endpoint <c>HF_ENDPOINT</c>; token
    /// <c>HF_TOKEN</c> (or <c>HUGGING_FACE_HUB_TOKEN</c>), else the file <c>HF_TOKEN_PATH</c> (default
    /// <c>$HF_HOME/token</c>), none when <c>HF_HUB_DISABLE_IMPLICIT_TOKEN</c> is true; offline when
    /// <c>HF_HUB_OFFLINE</c> (or <c>TRANSFORMERS_OFFLINE</c>) is 1/ON/YES/TRUE.
    /// </summary>
    /// <param name="environment">Reads a variable; null = the process environment.</param>
    public static HubOptions FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string? Get(string name) => environment(name) is { Length: > 0 } value ? value : null;

        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string Expand(string path) => path == "~" ? home : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(home, path[2..]) : path;

        string hfHome = Expand(Get("HF_HOME") ?? Path.Combine(Get("XDG_CACHE_HOME") ?? Path.Combine(home, ".cache"), "huggingface"));
        string cache = Expand(Get("HF_HUB_CACHE") ?? Get("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(hfHome, "hub"));
        string endpoint = (Get("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/');

        string? token = Get("HF_TOKEN") ?? Get("HUGGING_FACE_HUB_TOKEN");
        if (token is null)
        {
            string tokenPath = Expand(Get("HF_TOKEN_PATH") ?? Path.Combine(hfHome, "token"));
            try
            {
                token = File.Exists(tokenPath) ? File.ReadAllText(tokenPath).Trim() : null;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                token = null;
            }
        }

        if (IsTrue(Get("HF_HUB_DISABLE_IMPLICIT_TOKEN")))
        {
            token = null;
        }

        return new HubOptions
        {
            CacheDir = cache,
            Endpoint = endpoint,
            Token = string.IsNullOrEmpty(token) ? null : token,
            Offline = IsTrue(Get("HF_HUB_OFFLINE") ?? Get("TRANSFORMERS_OFFLINE")),
        };
    }

    /// <summary>huggingface_hub's <c>_is_true</c>: 1, ON, YES or TRUE, case-insensitive.</summary>
    public static bool IsTrue(string? value) =>
        value is not null && value.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";
}
