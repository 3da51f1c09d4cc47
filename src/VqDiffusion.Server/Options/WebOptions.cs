namespace VqDiffusion.Server.Options;

/// <summary>
/// Configuration section <c>Web</c>: the browser endpoint, an HTTP/1.1 listener of the same server that speaks
/// gRPC-Web (the same services, interceptors, limits and logs as the gRPC endpoint) and serves the playground page.
/// </summary>
public sealed class WebOptions
{
    public const string Section = "Web";

    /// <summary>The endpoint's address, <c>http://host:port</c> (host: an IP address, <c>localhost</c>, <c>*</c>; port 0 = any free one); empty = off.</summary>
    public string? Url { get; set; }

    /// <summary>
    /// Origins other than the page's own that may call the endpoint from a browser (CORS), e.g. <c>https://app.example</c>,
    /// or <c>*</c> for any; empty = only the page served by the endpoint itself (same origin needs no CORS).
    /// </summary>
    public IReadOnlyList<string> AllowedOrigins { get; set; } = [];

    /// <summary>Whether <see cref="Url"/> is set.</summary>
    public bool Enabled => !string.IsNullOrWhiteSpace(Url);

    /// <summary>
    /// Reads the section: <c>AllowedOrigins</c> is a list (<c>Web:AllowedOrigins:0</c>, a JSON array) or one value with
    /// origins separated by commas or semicolons (<c>--Web:AllowedOrigins=https://a.example,https://b.example</c>).
    /// </summary>
    public static WebOptions From(IConfiguration configuration)
    {
        IConfigurationSection section = configuration.GetSection(Section);
        var origins = new List<string>();
        IConfigurationSection allowed = section.GetSection(nameof(AllowedOrigins));
        AddOrigins(origins, allowed.Value);
        foreach (IConfigurationSection child in allowed.GetChildren())
        {
            AddOrigins(origins, child.Value);
        }

        return new WebOptions { Url = section[nameof(Url)]?.Trim(), AllowedOrigins = origins };
    }

    private static void AddOrigins(List<string> origins, string? value)
    {
        if (value is not null)
        {
            origins.AddRange(value.Split([',', ';'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }
    }
}
