using VqDiffusion.Model.Runtime;
using VqDiffusion.Server;

// Model work (load, warm-up, every denoising step) runs on this, the process's main thread: it allocates
// from glibc's main arena, where GlibcMalloc keeps freed tensor buffers mapped. Any other thread would pay
// hundreds of thousands of page faults per request (see GlibcMalloc and the README's performance section).
GlibcMalloc.Configure();

// Alignment-independent MKL results (mapped and read weights give the same bits), before any matrix product.
MklReproducibility.Configure();
WebApplication app = ServerApp.Build(args);
ModelThread modelThread = app.Services.GetRequiredService<ModelThread>();
modelThread.ReserveCallingThread();
app.Start();
Task shutdown = app.WaitForShutdownAsync();
_ = shutdown.ContinueWith(_ => modelThread.Complete(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
modelThread.RunOnCurrentThread();
shutdown.GetAwaiter().GetResult();
app.DisposeAsync().AsTask().GetAwaiter().GetResult();
