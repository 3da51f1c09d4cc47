using System.Globalization;

namespace VqDiffusion.Benchmarks;

/// <summary><c>--name value</c> command-line options of the benchmarks.</summary>
internal static class BenchArgs
{
    public static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    public static int? Int(string[] args, string name) =>
        Value(args, name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : null;
}
