using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using VqDiffusion.Model.Runtime;
using VqDiffusion.Server.Auth;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Telemetry;
using VqDiffusion.Server.Web;

namespace VqDiffusion.Server;

/// <summary>Builds the ASP.NET Core host (used by Program and by the integration tests).</summary>
public static class ServerApp
{
    /// <summary>Largest request accepted (16 prompts of 2048 characters, even 4-byte ones, and 16 latent grids fit easily).</summary>
    public const int MaxReceiveMessageBytes = 4 * 1024 * 1024;

    /// <summary>Largest message sent: one encoded image or preview (a 1024x1024 RGB PNG is at most ~3 MB).</summary>
    public const int MaxSendMessageBytes = 32 * 1024 * 1024;

    /// <summary>Builds the application from command-line arguments.</summary>
    public static WebApplication Build(string[] args) => Build(CreateBuilder(args));

    /// <summary>The configured builder; services may still be replaced before <see cref="Build(WebApplicationBuilder)"/>.</summary>
    public static WebApplicationBuilder CreateBuilder(string[] args)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = args,
            ContentRootPath = AppContext.BaseDirectory,
        });

        // VQD_-prefixed environment variables (VQD_Model__Path=/models/ithq), then the command line again
        // so that it keeps the last word.
        builder.Configuration.AddEnvironmentVariables("VQD_");
        builder.Configuration.AddCommandLine(args);

        // Options are checked when the host starts: a bad value stops it with one message per problem (Program prints
        // them and exits with code 2).
        builder.Services.AddOptions<ModelOptions>().Bind(builder.Configuration.GetSection(ModelOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<ModelOptions>, ModelOptionsValidator>();
        builder.Services.AddOptions<GenerationOptions>().Bind(builder.Configuration.GetSection(GenerationOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<GenerationOptions>, GenerationOptionsValidator>();

        // The host waits for the drain (Generation:DrainTimeout) plus the margin for the last steps and streams
        // (Generation:ShutdownMargin) before Kestrel closes connections.
        builder.Services.AddOptions<HostOptions>().Configure<IConfiguration>((host, configuration) =>
        {
            var generation = new GenerationOptions();
            try
            {
                configuration.GetSection(GenerationOptions.Section).Bind(generation);
            }
            catch (InvalidOperationException)
            {
                return; // reported by the options check at start
            }

            if (generation.DrainTimeout >= TimeSpan.Zero && generation.ShutdownMargin >= TimeSpan.Zero
                && generation.ShutdownTimeout <= 2 * GenerationOptions.MaxShutdownTime)
            {
                host.ShutdownTimeout = generation.ShutdownTimeout;
            }
        });
        builder.Services.Configure<ServerOptions>(builder.Configuration.GetSection(ServerOptions.Section));
        builder.AddWebEndpoint();

        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = MaxReceiveMessageBytes;
            o.MaxSendMessageSize = MaxSendMessageBytes;
            o.Interceptors.Add<AuthInterceptor>(); // UNAUTHENTICATED before anything else looks at the call (Auth)
            o.Interceptors.Add<StatusInterceptor>(); // undecodable requests and escaped failures as clear statuses
        });
        builder.AddServerTelemetry();
        builder.AddServerAuth();
        builder.Services.AddGrpcReflection();
        builder.Services.AddGrpcHealthChecks(o =>
        {
            o.Services.Map(string.Empty, _ => true);
            o.Services.Map("vqdiffusion.v1.VqDiffusionService", _ => true);
        }).AddCheck<ModelHealthCheck>("model");

        builder.Services.TryAddSingleton<IModelLoadGate, OpenModelLoadGate>();
        builder.Services.TryAddSingleton(_ => new ModelThread());
        builder.Services.AddSingleton<GenerationQueue>();
        builder.Services.AddSingleton<ServerShutdown>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ServerShutdown>());
        builder.Services.AddSingleton<ModelHost>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ModelHost>());
        builder.Services.AddHostedService<GenerationWorker>();

        return builder;
    }

    /// <summary>Builds the application and maps the gRPC services.</summary>
    public static WebApplication Build(WebApplicationBuilder builder)
    {
        var app = builder.Build();
        string? instanceId = app.Services.GetRequiredService<IOptions<ServerOptions>>().Value.InstanceId;
        if (!string.IsNullOrWhiteSpace(instanceId))
        {
            // Before any gRPC handler runs, so it also rides on trailers-only (error) responses.
            app.Use((context, next) =>
            {
                context.Response.Headers[ServerOptions.InstanceIdHeader] = instanceId;
                return next(context);
            });
        }

        LogAuth(app);
        app.UseWebEndpoint(); // Web:Url: the playground's files, CORS and gRPC-Web (before the gRPC services)
        app.MapGrpcService<VqDiffusionGrpcService>();
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
        app.MapGet("/", () => "VqDiffusion.Grpc: a gRPC service (HTTP/2). Use a gRPC client, grpcurl or buf curl; see README.md.");
        return app;
    }

    /// <summary>Says at start whether calls need credentials, and which (names only, never keys).</summary>
    private static void LogAuth(WebApplication app)
    {
        AuthOptions auth;
        try
        {
            auth = app.Services.GetRequiredService<IOptions<AuthOptions>>().Value;
        }
        catch (OptionsValidationException)
        {
            return; // reported when the host starts
        }

        ILogger logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("VqDiffusion.Server.Auth");
        if (!auth.Enabled)
        {
            logger.LogInformation("Authentication off: any caller may call Generate and GetModelInfo (set Auth:ApiKeys, Auth:ApiKeysFile or Auth:Jwt)");
            return;
        }

        string keys = auth.ApiKeysEnabled
            ? $"API keys ({string.Join(", ", auth.ApiKeys.Keys.Order(StringComparer.Ordinal))}{(auth.ApiKeysFile is { Length: > 0 } file ? $"{(auth.ApiKeys.Count > 0 ? ", " : string.Empty)}file {file}" : string.Empty)})"
            : "no API keys";
        string jwt = auth.Jwt.Enabled
            ? $"JWT for audience '{auth.Jwt.Audience}' from {(string.IsNullOrWhiteSpace(auth.Jwt.Authority) ? $"issuer '{auth.Jwt.Issuer}'" : $"authority {auth.Jwt.Authority}")}"
            : "no JWT";
        logger.LogInformation(
            "Authentication on: Generate and GetModelInfo need 'authorization: Bearer ...': {Keys}; {Jwt}; health open, reflection {Reflection}",
            keys, jwt, auth.RequireForReflection ? "needs credentials" : "open");
    }
}
