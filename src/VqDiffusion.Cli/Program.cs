using VqDiffusion.Cli;
using VqDiffusion.Model.Runtime;

// Local generation runs on this, the main thread, with glibc keeping tensor buffers mapped (see GlibcMalloc).
GlibcMalloc.Configure();
return await CliApp.RunAsync(args, Console.Out, Console.Error, CancellationToken.None);
