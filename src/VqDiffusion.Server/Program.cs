using VqDiffusion.Model.Runtime;
using VqDiffusion.Server;
using VqDiffusion.Server.Options;
using VqDiffusion.Server.Services;

// Model work (load, warm-up, every denoising step) runs on this, the process's main thread: it allocates
// from glibc's main arena, where GlibcMalloc keeps freed tensor buffers mapped. Any other thread would pay
// hundreds of thousands of page faults per request (see GlibcMalloc and the README's performance section).
GlibcMalloc.Configure();

// Alignment-independent MKL results (mapped and read weights give the same bits), before any matrix product.
MklReproducibility.Configure();
WebApplication app;
ModelThread modelThread;
try
{
    app = ServerApp.Build(args);
    modelThread = app.Services.GetRequiredService<ModelThread>();
    modelThread.ReserveCallingThread();

    // Validates the options first (ValidateOnStart): a bad value stops here, one line per problem naming its key.
    app.Start();
}
catch (Exception ex) when (StartupErrors.ConfigurationProblems(ex) is { Count: > 0 } problems)
{
    foreach (string problem in problems)
    {
        Console.Error.WriteLine($"VqDiffusion.Server: invalid configuration: {problem}");
    }

    return StartupErrors.InvalidConfigurationExitCode;
}

// Shutdown (SIGTERM, Ctrl+C, or a model that failed to load with Model:ExitOnLoadFailure): ServerShutdown drains the
// queue and the active runs, the host stops, then the model thread finishes what it runs (the worker stops at a step
// boundary) and only after that are model objects disposed.
Task shutdown = app.WaitForShutdownAsync();
_ = shutdown.ContinueWith(_ => modelThread.Complete(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
modelThread.RunOnCurrentThread();
try
{
    shutdown.GetAwaiter().GetResult();
}
catch (Exception ex) when (ex is OperationCanceledException or AggregateException)
{
    // A service that did not stop within the shutdown timeout: still dispose in order below (the model thread is done).
    Console.Error.WriteLine($"VqDiffusion.Server: the host did not stop cleanly: {ex.Message}");
}

int exitCode = app.Services.GetRequiredService<ModelHost>().ExitCode;
app.DisposeAsync().AsTask().GetAwaiter().GetResult();
return exitCode;
