using System.Globalization;
using Microsoft.Extensions.Options;

namespace VqDiffusion.Server.Options;

/// <summary>Checks <see cref="GenerationOptions"/> at start (<c>ValidateOnStart</c>): one message per bad key, naming it.</summary>
public sealed class GenerationOptionsValidator : IValidateOptions<GenerationOptions>
{
    private const string Prefix = GenerationOptions.Section + ":";

    public ValidateOptionsResult Validate(string? name, GenerationOptions options)
    {
        var problems = new List<string>();
        AtLeast(problems, nameof(options.MaxQueueLength), options.MaxQueueLength, 1);
        AtLeast(problems, nameof(options.MaxActiveRuns), options.MaxActiveRuns, 1);
        problems.AddRange(options.ToLimits().Problems(Prefix));
        if (options.DefaultImageQuality is < 1 or > 100)
        {
            problems.Add(Invariant($"{Prefix}{nameof(options.DefaultImageQuality)} must be between 1 and 100, got {options.DefaultImageQuality}."));
        }

        Duration(problems, nameof(options.DrainTimeout), options.DrainTimeout);
        Duration(problems, nameof(options.ShutdownMargin), options.ShutdownMargin);
        AtLeast(problems, nameof(options.MaxQueuedPerCaller), options.MaxQueuedPerCaller, 0, " (0 = no per-caller limit)");
        AtLeast(problems, nameof(options.MaxActivePerCaller), options.MaxActivePerCaller, 0, " (0 = up to MaxActiveRuns)");
        if (options.EventBufferBytes < 0)
        {
            problems.Add(Invariant($"{Prefix}{nameof(options.EventBufferBytes)} must be at least 0 (0 = coalesce whenever the client lags), got {options.EventBufferBytes}."));
        }

        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }

    private static void AtLeast(List<string> problems, string key, int value, int min, string note = "")
    {
        if (value < min)
        {
            problems.Add(Invariant($"{Prefix}{key} must be at least {min}{note}, got {value}."));
        }
    }

    private static void Duration(List<string> problems, string key, TimeSpan value)
    {
        if (value < TimeSpan.Zero || value > GenerationOptions.MaxShutdownTime)
        {
            problems.Add(Invariant($"{Prefix}{key} must be a duration between 00:00:00 and {GenerationOptions.MaxShutdownTime:c} (hh:mm:ss; a bare number is days), got {value:c}."));
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
