namespace VqDiffusion.Model.Loading;

/// <summary>
/// A model folder, config or weights file could not be loaded. The message always names the file
/// (and, where it applies, the state_dict key and the shapes involved).
/// </summary>
public sealed class ModelLoadException : Exception
{
    public ModelLoadException(string message)
        : base(message)
    {
    }

    public ModelLoadException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
