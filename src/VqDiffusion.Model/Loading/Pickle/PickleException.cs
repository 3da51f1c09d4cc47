namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// A pickle stream is malformed, uses an unsupported opcode, or references an object that is not on
/// the allow-list. The caller turns it into a <see cref="ModelLoadException"/> naming the file.
/// </summary>
internal sealed class PickleException : Exception
{
    public PickleException(string message)
        : base(message)
    {
    }
}
