using System.Reflection;

namespace VqDiffusion.Model.Imaging;

/// <summary>Which model and software made an image: written into its metadata (<see cref="GenerationParameters"/>).</summary>
/// <param name="Model">The Hub id (<c>org/name</c>) or the model folder's name.</param>
/// <param name="Revision">The Hub revision as asked (<c>main</c>, a tag, a commit), null for a folder.</param>
/// <param name="CommitHash">The commit the revision resolved to, null for a folder.</param>
public sealed record ModelProvenance(string Model, string? Revision = null, string? CommitHash = null)
{
    /// <summary>
    /// <c>VqDiffusion.Grpc 0.1.0</c>: the version of the model library, the same in the server and in <c>vqd</c>, so an
    /// image made locally and the same image made by a server carry the same bytes.
    /// </summary>
    public static string Software { get; } =
        "VqDiffusion.Grpc " + (typeof(ModelProvenance).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0");
}
