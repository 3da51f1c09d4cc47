namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>An unpickled Python tuple.</summary>
internal sealed class PickleTuple
{
    public static readonly PickleTuple Empty = new([]);

    public PickleTuple(object?[] items) => Items = items;

    public IReadOnlyList<object?> Items { get; }

    public int Count => Items.Count;

    public object? this[int index] => Items[index];

    /// <summary>One level only (nested containers print as their type), so hostile nesting cannot exhaust the stack.</summary>
    public override string ToString() =>
        "(" + string.Join(", ", Items.Select(Format)) + (Count == 1 ? ",)" : ")");

    private static string Format(object? item) => item switch
    {
        string s => "'" + (s.Length > 64 ? s[..64] + "…" : s) + "'",
        long or double or bool => Convert.ToString(item, System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty,
        _ => PickleReader.TypeName(item),
    };
}
