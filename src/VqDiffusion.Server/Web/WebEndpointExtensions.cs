using Grpc.AspNetCore.Web;
using Microsoft.AspNetCore.Cors.Infrastructure;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Web;

/// <summary>Registers and maps the browser endpoint (README, "Browsers: gRPC-Web and the playground").</summary>
public static class WebEndpointExtensions
{
    /// <summary>
    /// <c>Web</c> options (checked at start) and, with <c>Web:Url</c> set, the listener, CORS for
    /// <c>Web:AllowedOrigins</c> and the connection marking. Without it nothing changes: Kestrel binds <c>--urls</c> itself.
    /// </summary>
    public static WebApplicationBuilder AddWebEndpoint(this WebApplicationBuilder builder)
    {
        IConfiguration configuration = builder.Configuration;
        builder.Services.AddOptions<WebOptions>().Configure(o =>
        {
            WebOptions read = WebOptions.From(configuration);
            o.Url = read.Url;
            o.AllowedOrigins = read.AllowedOrigins;
        }).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<WebOptions>, WebOptionsValidator>();

        WebOptions web = WebOptions.From(configuration);
        if (!web.Enabled)
        {
            return builder;
        }

        var endpoint = new WebEndpoint();
        builder.Services.AddSingleton(endpoint);

        // Kestrel ignores urls once listeners are configured in code (and says so in a warning at start): bind them
        // here too (WebEndpoint.Configure).
        string? urls = configuration[WebHostDefaults.ServerUrlsKey];
        builder.WebHost.ConfigureKestrel((context, kestrel) => endpoint.Configure(kestrel, context.Configuration, web, urls));

        var origins = web.AllowedOrigins.Select(o => WebEndpoint.TryNormalizeOrigin(o, out string n) ? n : null).OfType<string>().ToArray();
        if (origins.Length > 0)
        {
            builder.Services.AddCors(o => o.AddDefaultPolicy(policy =>
            {
                CorsPolicyBuilder withOrigins = origins.Contains("*") ? policy.AllowAnyOrigin() : policy.WithOrigins(origins);
                withOrigins.WithMethods("POST", "GET")
                    .WithHeaders(WebEndpoint.AllowedRequestHeaders)
                    .WithExposedHeaders(WebEndpoint.ExposedResponseHeaders)
                    .SetPreflightMaxAge(TimeSpan.FromMinutes(10));
            }));
        }

        return builder;
    }

    /// <summary>
    /// With <c>Web:Url</c> set: the playground (<c>wwwroot</c>, <c>/</c> = <c>index.html</c>) on the browser endpoint only,
    /// then routing, CORS and gRPC-Web for every gRPC service. Call before the services are mapped.
    /// </summary>
    public static WebApplication UseWebEndpoint(this WebApplication app)
    {
        if (app.Services.GetService<WebEndpoint>() is null)
        {
            return app;
        }

        app.UseWhen(WebEndpoint.IsWebRequest, page =>
        {
            page.UseDefaultFiles();
            page.UseStaticFiles(new StaticFileOptions
            {
                // The bundle's name does not change with its content: let browsers revalidate rather than keep an old one.
                OnPrepareResponse = file => file.Context.Response.Headers[HeaderNames.CacheControl] = "no-cache",
            });
        });
        app.UseRouting();
        if (app.Services.GetService<ICorsService>() is not null)
        {
            app.UseCors();
        }

        app.UseGrpcWeb(new GrpcWebOptions { DefaultEnabled = true });

        // One line that says which address is which (Kestrel lists both, after its warning about overriding urls).
        WebEndpoint endpoint = app.Services.GetRequiredService<WebEndpoint>();
        ILogger logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(WebEndpoint));
        app.Lifetime.ApplicationStarted.Register(() => logger.LogInformation(
            "Browser endpoint (gRPC-Web over HTTP/1.1, the playground page at /) at {WebUrl}; gRPC endpoints: {GrpcUrls}",
            endpoint.Address, string.Join(", ", endpoint.GrpcAddresses(app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()))));
        return app;
    }
}
