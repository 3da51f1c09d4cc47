using VqDiffusion.Cli;
using VqDiffusion.Model.Runtime;

// Local generation runs on this, the main thread, with glibc keeping tensor buffers mapped (see GlibcMalloc).
GlibcMalloc.Configure();
MklReproducibility.Configure(); // alignment-independent MKL results, before any matrix product
return await CliApp.RunAsync(args, Console.Out, Console.Error, CancellationToken.None);
