using Grpc.Core;
using VqDiffusion.Server.Services;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>A caller identity from the <c>x-test-caller</c> header, to play several callers from one address (the seam an API key uses).</summary>
public sealed class HeaderCallerIdentity : ICallerIdentity
{
    public const string Header = "x-test-caller";

    public string CallerOf(ServerCallContext context) => context.RequestHeaders.GetValue(Header) ?? "anonymous";

    public static Metadata As(string caller) => new() { { Header, caller } };
}
