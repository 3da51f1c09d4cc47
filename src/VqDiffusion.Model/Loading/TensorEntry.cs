using TorchSharp;

namespace VqDiffusion.Model.Loading;

/// <summary>
/// One tensor stored in a weights file: its name, stored dtype and shape, and a way to read it.
/// Reading is lazy so that a checkpoint is never held in memory as a whole.
/// </summary>
public sealed class TensorEntry
{
    private readonly Func<torch.Tensor> _read;
    private readonly Func<torch.Tensor?>? _map;

    public TensorEntry(string name, torch.ScalarType dtype, long[] shape, string file, Func<torch.Tensor> read, Func<torch.Tensor?>? map = null)
    {
        _map = map;
        Name = name;
        DType = dtype;
        Shape = shape;
        File = file;
        _read = read;
    }

    public string Name { get; }

    public torch.ScalarType DType { get; }

    public long[] Shape { get; }

    /// <summary>The file the tensor is stored in (for error messages).</summary>
    public string File { get; }

    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Reads the tensor into a new CPU tensor of the stored dtype and shape.</summary>
    public torch.Tensor Read() => _read();

    /// <summary>
    /// The tensor as a view of the memory-mapped file (pages read on first use, nothing copied), or null where the
    /// format or the alignment of its data does not allow one: then use <see cref="Read"/>.
    /// </summary>
    public torch.Tensor? Map() => _map?.Invoke();
}
