using Microsoft.Extensions.Options;

namespace VqDiffusion.Server.Options;

/// <summary>Turns a failed start caused by bad configuration into one line per problem, each naming its key.</summary>
public static class StartupErrors
{
    /// <summary>Process exit code when the configuration is invalid.</summary>
    public const int InvalidConfigurationExitCode = 2;

    /// <summary>
    /// The configuration problems behind <paramref name="exception"/> (failed <c>ValidateOnStart</c> checks, values the
    /// binder cannot convert), or an empty list when it is not a configuration error.
    /// </summary>
    public static IReadOnlyList<string> ConfigurationProblems(Exception exception)
    {
        var problems = new List<string>();
        Collect(exception, problems);
        return problems;
    }

    private static void Collect(Exception exception, List<string> problems)
    {
        switch (exception)
        {
            case OptionsValidationException validation:
                problems.AddRange(validation.Failures);
                break;
            case AggregateException aggregate:
                foreach (Exception each in aggregate.InnerExceptions)
                {
                    Collect(each, problems);
                }

                break;
            case InvalidOperationException conversion when conversion.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal):
                // "Failed to convert configuration value at 'Generation:MaxQueueLength' to type 'System.Int32'."
                problems.Add(conversion.InnerException is { } inner
                    ? $"{conversion.Message} {inner.Message}".ReplaceLineEndings(" ")
                    : conversion.Message);
                break;
        }
    }
}
