namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// An allow-listed callable that a pickle may invoke through REDUCE or NEWOBJ. Its implementation is
/// ours (it builds plain descriptions such as <see cref="TorchTensorRef"/>); nothing from the file runs.
/// </summary>
internal sealed class PickleFunction
{
    private readonly Func<PickleTuple, object?> _call;

    public PickleFunction(string qualifiedName, Func<PickleTuple, object?> call)
    {
        QualifiedName = qualifiedName;
        _call = call;
    }

    /// <summary>The Python name, <c>module.name</c>.</summary>
    public string QualifiedName { get; }

    public object? Call(PickleTuple args) => _call(args);

    public override string ToString() => QualifiedName;
}
