using Microsoft.Extensions.DependencyInjection.Extensions;
using VqDiffusion.Model.Runtime;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Queue;
using VqDiffusion.Server.Services;
using VqDiffusion.Server.Telemetry;

namespace VqDiffusion.Server;

/// <summary>Builds the ASP.NET Core host (used by Program and by the integration tests).</summary>
public static class ServerApp
{
    /// <summary>Largest request accepted (16 prompts of 2048 characters and 16 latent grids fit easily).</summary>
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

        builder.Services.Configure<ModelOptions>(builder.Configuration.GetSection(ModelOptions.Section));
        builder.Services.Configure<GenerationOptions>(builder.Configuration.GetSection(GenerationOptions.Section));

        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = MaxReceiveMessageBytes;
            o.MaxSendMessageSize = MaxSendMessageBytes;
        });
        builder.AddServerTelemetry();
        builder.Services.AddGrpcReflection();
        builder.Services.AddGrpcHealthChecks(o =>
        {
            o.Services.Map(string.Empty, _ => true);
            o.Services.Map("vqdiffusion.v1.VqDiffusionService", _ => true);
        }).AddCheck<ModelHealthCheck>("model");

        builder.Services.TryAddSingleton<IModelLoadGate, OpenModelLoadGate>();
        builder.Services.TryAddSingleton(_ => new ModelThread());
        builder.Services.AddSingleton<ModelHost>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<ModelHost>());
        builder.Services.AddSingleton<GenerationQueue>();
        builder.Services.AddHostedService<GenerationWorker>();

        return builder;
    }

    /// <summary>Builds the application and maps the gRPC services.</summary>
    public static WebApplication Build(WebApplicationBuilder builder)
    {
        var app = builder.Build();
        app.MapGrpcService<VqDiffusionGrpcService>();
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
        app.MapGet("/", () => "VqDiffusion.Grpc: a gRPC service (HTTP/2). Use a gRPC client, grpcurl or buf curl; see README.md.");
        return app;
    }
}
