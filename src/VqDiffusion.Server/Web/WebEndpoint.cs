using System.Net;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Web;

/// <summary>
/// The browser endpoint (<c>Web:Url</c>): one more HTTP/1.1 Kestrel listener of the same application, so gRPC-Web calls
/// go through the same services, interceptors (authentication, limits, error mapping, telemetry) and logs as gRPC ones.
/// Its connections are marked, so that the playground page and its files are served there only; the gRPC endpoints
/// keep their protocols and their text answer at <c>/</c>.
/// </summary>
/// <remarks>
/// Kestrel ignores <c>--urls</c> (<c>ASPNETCORE_URLS</c>) once any listener is configured in code, so with <c>Web:Url</c>
/// set the <c>urls</c> addresses are bound here too, with the protocols of <c>Kestrel:EndpointDefaults</c> (HTTP/2 in
/// appsettings.json). Endpoints of <c>Kestrel:Endpoints</c>, when there are any, win over <c>urls</c> as they always do.
/// </remarks>
public sealed class WebEndpoint
{
    /// <summary>The key of the connection item that marks connections accepted by the browser endpoint.</summary>
    public const string ConnectionMarker = "vqd-web";

    /// <summary>ASP.NET Core's own default address when neither <c>urls</c> nor <c>Kestrel:Endpoints</c> name one.</summary>
    public const string DefaultUrls = "http://localhost:5000";

    /// <summary>The headers a browser may send on a cross-origin gRPC-Web call (CORS).</summary>
    public static readonly string[] AllowedRequestHeaders =
    [
        "authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "grpc-encoding",
        "grpc-accept-encoding", "traceparent", "tracestate",
    ];

    /// <summary>The response headers a cross-origin page may read (CORS): the status, its details and the replica's name.</summary>
    public static readonly string[] ExposedResponseHeaders =
    [
        "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", ServerOptions.InstanceIdHeader,
    ];

    private ListenOptions? _listen;

    /// <summary>The endpoint's address once the server listens, e.g. <c>http://127.0.0.1:8080</c> (the bound port when <c>Web:Url</c> has port 0).</summary>
    public Uri? Address
    {
        get
        {
            if (_listen?.EndPoint is not IPEndPoint ip || ip.Port == 0)
            {
                return null;
            }

            IPAddress host = ip.Address.Equals(IPAddress.Any) || ip.Address.Equals(IPAddress.IPv6Any) ? IPAddress.Loopback : ip.Address;
            return new UriBuilder("http", host.ToString(), ip.Port).Uri;
        }
    }

    /// <summary>Whether the request came in through the browser endpoint.</summary>
    public static bool IsWebRequest(HttpContext context) =>
        context.Features.Get<IConnectionItemsFeature>()?.Items.ContainsKey(ConnectionMarker) == true;

    /// <summary>Parses <c>Web:Url</c>: <c>http://host:port</c>, host an IP address, <c>localhost</c> or <c>*</c>/<c>+</c>/empty (every interface).</summary>
    public static bool TryParseUrl(string url, out BindingAddress address, out string? problem)
    {
        address = null!;
        try
        {
            address = BindingAddress.Parse(url.Trim());
        }
        catch (FormatException ex)
        {
            problem = ex.Message;
            return false;
        }

        if (!string.Equals(address.Scheme, "http", StringComparison.OrdinalIgnoreCase))
        {
            problem = "only http is supported (put a TLS-terminating proxy in front for https).";
            return false;
        }

        if (address.IsUnixPipe || address.IsNamedPipe)
        {
            problem = "a TCP address is needed.";
            return false;
        }

        if (address.PathBase.Length > 0)
        {
            problem = "the address has no path.";
            return false;
        }

        if (address.Port is < 0 or > 65535 || !HasExplicitPort(url))
        {
            problem = "give the port explicitly.";
            return false;
        }

        if (IsLocalhost(address.Host) && address.Port == 0)
        {
            problem = "port 0 (any free port) needs an IP address, e.g. http://127.0.0.1:0, not localhost.";
            return false;
        }

        if (!IsAnyHost(address.Host) && !IsLocalhost(address.Host) && !IPAddress.TryParse(address.Host, out _))
        {
            problem = $"the host must be an IP address, localhost or *, not '{address.Host}'.";
            return false;
        }

        problem = null;
        return true;
    }

    /// <summary>An origin of <c>Web:AllowedOrigins</c> as browsers send it (<c>https://app.example:8443</c>, no trailing slash), or <c>*</c>.</summary>
    public static bool TryNormalizeOrigin(string origin, out string normalized)
    {
        normalized = origin.Trim();
        if (normalized == "*")
        {
            return true;
        }

        if (!Uri.TryCreate(normalized, UriKind.Absolute, out Uri? uri)
            || uri.Scheme is not ("http" or "https")
            || uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.Fragment.Length > 0 || uri.UserInfo.Length > 0
            || normalized.TrimEnd('/').Count(c => c == '/') != 2)
        {
            return false;
        }

        normalized = uri.GetLeftPart(UriPartial.Authority);
        return true;
    }

    /// <summary>
    /// Adds the listeners: the browser endpoint (HTTP/1.1, its connections marked) and, unless <c>Kestrel:Endpoints</c>
    /// names endpoints, every address of <paramref name="urls"/> (<c>--urls</c> as given at start).
    /// </summary>
    public void Configure(KestrelServerOptions kestrel, IConfiguration configuration, WebOptions options, string? urls)
    {
        if (!options.Enabled || !TryParseUrl(options.Url!, out BindingAddress web, out _))
        {
            return; // reported by the options check at start
        }

        if (!configuration.GetSection("Kestrel:Endpoints").GetChildren().Any())
        {
            HttpProtocols? protocols = Enum.TryParse(configuration["Kestrel:EndpointDefaults:Protocols"], ignoreCase: true, out HttpProtocols p) ? p : null;
            foreach (string url in HostingUrls(configuration, urls).Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                BindingAddress address = BindingAddress.Parse(url);
                bool https = string.Equals(address.Scheme, "https", StringComparison.OrdinalIgnoreCase);
                Listen(kestrel, address, https ? 443 : 80, listen =>
                {
                    if (protocols is { } value)
                    {
                        listen.Protocols = value;
                    }

                    if (https)
                    {
                        listen.UseHttps();
                    }
                });
            }
        }

        Listen(kestrel, web, 80, listen =>
        {
            listen.Protocols = HttpProtocols.Http1;
            listen.Use(next => connection =>
            {
                connection.Items[ConnectionMarker] = true;
                return next(connection);
            });
            _listen = listen;
        });
    }

    /// <summary>
    /// What Kestrel would bind without code-configured listeners: <c>urls</c>, else <c>http_ports</c>/<c>https_ports</c>
    /// (<c>ASPNETCORE_HTTP_PORTS</c>, every interface), else <see cref="DefaultUrls"/>.
    /// </summary>
    public static string HostingUrls(IConfiguration configuration, string? urls)
    {
        if (!string.IsNullOrWhiteSpace(urls))
        {
            return urls;
        }

        IEnumerable<string> Ports(string key, string scheme) =>
            (configuration[key] ?? string.Empty).Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(p => $"{scheme}://*:{p}");
        string ports = string.Join(';', Ports("http_ports", "http").Concat(Ports("https_ports", "https")));
        return ports.Length > 0 ? ports : DefaultUrls;
    }

    /// <summary>The addresses the server listens on, the browser endpoint's excepted.</summary>
    public IEnumerable<string> GrpcAddresses(IServer server)
    {
        string? web = Address?.GetLeftPart(UriPartial.Authority);
        return (server.Features.Get<IServerAddressesFeature>()?.Addresses ?? []).Where(a => !string.Equals(a.TrimEnd('/'), web, StringComparison.OrdinalIgnoreCase));
    }

    private static void Listen(KestrelServerOptions kestrel, BindingAddress address, int defaultPort, Action<ListenOptions> configure)
    {
        if (address.IsUnixPipe)
        {
            kestrel.ListenUnixSocket(address.UnixPipePath, configure);
            return;
        }

        int port = HasExplicitPort(address.ToString()) ? address.Port : defaultPort;
        if (IsLocalhost(address.Host))
        {
            kestrel.ListenLocalhost(port, configure);
        }
        else if (IPAddress.TryParse(address.Host, out IPAddress? ip))
        {
            kestrel.Listen(ip, port, configure);
        }
        else
        {
            kestrel.ListenAnyIP(port, configure);
        }
    }

    private static bool HasExplicitPort(string url)
    {
        int start = url.IndexOf("://", StringComparison.Ordinal);
        string authority = start < 0 ? url : url[(start + 3)..];
        int slash = authority.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0)
        {
            authority = authority[..slash];
        }

        int colon = authority.LastIndexOf(':');
        return colon >= 0 && colon > authority.LastIndexOf(']') && authority[(colon + 1)..].Length > 0 && authority[(colon + 1)..].All(char.IsAsciiDigit);
    }

    private static bool IsLocalhost(string host) => string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase);

    private static bool IsAnyHost(string host) => host is "" or "*" or "+" or "0.0.0.0" or "[::]";
}
