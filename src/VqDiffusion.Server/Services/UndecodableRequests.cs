using System.Runtime.CompilerServices;
using System.Text;
using Google.Protobuf;
using Grpc.Core;

namespace VqDiffusion.Server.Services;

/// <summary>
/// Requests the server could not decode. grpc-dotnet deserializes a request before any interceptor or handler runs,
/// and an exception thrown there is answered UNKNOWN "Exception was thrown by handler." and logged with its stack
/// trace. The wrapped marshaller instead returns an empty placeholder message and remembers why here;
/// <see cref="StatusInterceptor"/> answers it with INVALID_ARGUMENT (one short log line, no stack trace) before the
/// handler sees it.
/// </summary>
internal static class UndecodableRequests
{
    private static readonly ConditionalWeakTable<object, string> Reasons = new();

    public static Marshaller<T> Wrap<T>(Marshaller<T> inner)
        where T : class =>
        new(inner.ContextualSerializer, context =>
        {
            try
            {
                return inner.ContextualDeserializer(context);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                T placeholder = Activator.CreateInstance<T>();
                Reasons.AddOrUpdate(placeholder, Describe(placeholder, ex));
                return placeholder;
            }
        });

    /// <summary>The client-facing reason when <paramref name="request"/> is a placeholder for undecodable bytes.</summary>
    public static bool TryGetReason(object? request, out string reason)
    {
        if (request is not null && Reasons.TryGetValue(request, out string? r))
        {
            reason = r;
            return true;
        }

        reason = string.Empty;
        return false;
    }

    private static string Describe(object placeholder, Exception ex)
    {
        string message = placeholder is IMessage m ? m.Descriptor.FullName : placeholder.GetType().Name;
        string why = ex switch
        {
            DecoderFallbackException => "a string field is not valid UTF-8",
            InvalidProtocolBufferException p when p.InnerException is DecoderFallbackException => "a string field is not valid UTF-8",
            InvalidProtocolBufferException p => "malformed protobuf: " + p.Message.TrimEnd('.'),
            _ => "malformed protobuf",
        };
        return $"the request is not a valid {message} message ({why})";
    }
}
