namespace VqDiffusion.Cli;

/// <summary>Bad command-line input: printed as one line, exit code 2.</summary>
public sealed class UsageException : Exception
{
    public UsageException(string message)
        : base(message)
    {
    }
}
