using Microsoft.Extensions.Options;
using VqDiffusion.Server.Web;

namespace VqDiffusion.Server.Options;

/// <summary>Checks <see cref="WebOptions"/> at start (<c>ValidateOnStart</c>): one message per bad key, naming it.</summary>
public sealed class WebOptionsValidator : IValidateOptions<WebOptions>
{
    private const string Prefix = WebOptions.Section + ":";

    public ValidateOptionsResult Validate(string? name, WebOptions options)
    {
        var problems = new List<string>();
        if (options.Enabled && !WebEndpoint.TryParseUrl(options.Url!, out _, out string? why))
        {
            problems.Add($"{Prefix}{nameof(options.Url)} must be http://host:port (host: an IP address, localhost or *; port 0..65535), got '{options.Url}': {why}");
        }

        if (options.AllowedOrigins.Count > 0 && !options.Enabled)
        {
            problems.Add($"{Prefix}{nameof(options.AllowedOrigins)} needs {Prefix}{nameof(options.Url)} (the endpoint the origins may call), which is not set.");
        }

        foreach (string origin in options.AllowedOrigins)
        {
            if (!WebEndpoint.TryNormalizeOrigin(origin, out _))
            {
                problems.Add($"{Prefix}{nameof(options.AllowedOrigins)} must list origins (scheme://host[:port], no path) or *, got '{origin}'.");
            }
        }

        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
