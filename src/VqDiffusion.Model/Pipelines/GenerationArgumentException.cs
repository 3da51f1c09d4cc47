namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// A request argument is out of range. <see cref="Field"/> is the argument's name as the API spells it
/// (<c>num_inference_steps</c>, <c>prompts[2]</c> ...) and the message says the allowed range.
/// </summary>
public sealed class GenerationArgumentException : ArgumentException
{
    public GenerationArgumentException(string field, string message)
        : base(message, field)
    {
        Field = field;
    }

    public string Field { get; }

    /// <summary>The message without the " (Parameter 'x')" suffix ArgumentException appends.</summary>
    public string Reason => base.Message.Replace($" (Parameter '{Field}')", string.Empty, StringComparison.Ordinal);
}
