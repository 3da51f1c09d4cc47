namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// An unpickled Python dict or <c>collections.OrderedDict</c>: insertion-ordered, keys compared by value
/// (strings, integers, floats and booleans; other keys, which a state_dict never has, are rejected).
/// </summary>
internal sealed class PickleDict
{
    private readonly List<KeyValuePair<object, object?>> _items = [];
    private readonly Dictionary<object, int> _index = [];

    public PickleDict(bool ordered) => IsOrderedDict = ordered;

    /// <summary>True for <c>collections.OrderedDict</c>, false for a plain dict.</summary>
    public bool IsOrderedDict { get; }

    public IReadOnlyList<KeyValuePair<object, object?>> Items => _items;

    public int Count => _items.Count;

    /// <summary>The state applied by a BUILD opcode (an OrderedDict's <c>__dict__</c>, e.g. <c>_metadata</c>).</summary>
    public object? State { get; set; }

    public void Set(object? key, object? value)
    {
        if (key is not (string or long or double or bool))
        {
            throw new PickleException($"unsupported dict key of type {PickleReader.TypeName(key)}");
        }

        if (_index.TryGetValue(key, out int at))
        {
            _items[at] = new KeyValuePair<object, object?>(key, value);
        }
        else
        {
            _index[key] = _items.Count;
            _items.Add(new KeyValuePair<object, object?>(key, value));
        }
    }
}
