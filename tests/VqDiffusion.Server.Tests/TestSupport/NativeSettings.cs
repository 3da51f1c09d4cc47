using System.Runtime.CompilerServices;
using VqDiffusion.Model.Runtime;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>The process settings the server and vqd apply first thing, applied before any test runs.</summary>
internal static class NativeSettings
{
#pragma warning disable CA2255 // MKL reads MKL_CBWR at its first matrix product: this must run before any test code
    [ModuleInitializer]
    internal static void Apply() => MklReproducibility.Configure();
#pragma warning restore CA2255
}
