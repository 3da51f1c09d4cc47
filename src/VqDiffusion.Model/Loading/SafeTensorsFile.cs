using System.Text.Json;
using TorchSharp;

namespace VqDiffusion.Model.Loading;

/// <summary>
/// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
/// (<c>name → {dtype, shape, data_offsets}</c>, plus optional <c>__metadata__</c>) and the raw data.
/// The header is validated against the file size before any tensor is read.
/// </summary>
public sealed class SafeTensorsFile : IWeightsFile
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;
    private readonly FileStream _stream;
    private readonly object _gate = new();
    private readonly Dictionary<string, TensorEntry> _tensors = new(StringComparer.Ordinal);
    private readonly Dictionary<torch.ScalarType, torch.Tensor> _mapped = new();

    private SafeTensorsFile(string path, FileStream stream)
    {
        Path = path;
        _stream = stream;
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, TensorEntry> Tensors => _tensors;

    /// <summary>Metadata from the <c>__metadata__</c> header entry (empty if absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; private set; } = new Dictionary<string, string>();

    public static SafeTensorsFile Open(string path)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{path}: cannot open weights file: {ex.Message}", ex);
        }

        var file = new SafeTensorsFile(path, stream);
        try
        {
            file.ReadHeader();
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private void ReadHeader()
    {
        long length = _stream.Length;
        Span<byte> prefix = stackalloc byte[8];
        if (length < 8 || _stream.Read(prefix) != 8)
        {
            throw Corrupt($"file is {length} bytes, too short for a safetensors header");
        }

        long headerLength = BitConverter.ToInt64(prefix);
        if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > length)
        {
            throw Corrupt($"header length {headerLength} does not fit the file size {length}");
        }

        var header = new byte[headerLength];
        _stream.ReadExactly(header);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException ex)
        {
            throw Corrupt($"header is not valid JSON ({ex.Message})");
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw Corrupt("header is not a JSON object");
            }

            long dataStart = 8 + headerLength;
            long dataLength = length - dataStart;
            foreach (JsonProperty prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    Metadata = prop.Value.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ToString());
                    continue;
                }

                AddEntry(prop, dataStart, dataLength);
            }
        }
    }

    private void AddEntry(JsonProperty prop, long dataStart, long dataLength)
    {
        string name = prop.Name;
        try
        {
            string dtypeName = prop.Value.GetProperty("dtype").GetString() ?? string.Empty;
            torch.ScalarType dtype = ParseDType(dtypeName)
                ?? throw Corrupt($"tensor '{name}' has unsupported dtype '{dtypeName}'");
            long[] shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            long[] offsets = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            if (offsets.Length != 2 || shape.Any(d => d < 0))
            {
                throw Corrupt($"tensor '{name}' has a malformed shape or data_offsets");
            }

            long expected = shape.Aggregate(1L, (a, b) => a * b) * ScalarTypes.ElementSize(dtype);
            long begin = offsets[0];
            long end = offsets[1];
            if (begin < 0 || end < begin || end - begin != expected)
            {
                throw Corrupt($"tensor '{name}' {ScalarTypes.FormatShape(shape)} {dtypeName} needs {expected} bytes but data_offsets are [{begin}, {end}]");
            }

            if (end > dataLength)
            {
                throw Corrupt($"tensor '{name}' ends at byte {dataStart + end} but the file has only {dataStart + dataLength} bytes (truncated download?)");
            }

            long position = dataStart + begin;
            _tensors[name] = new TensorEntry(
                name,
                dtype,
                shape,
                Path,
                () =>
                {
                    lock (_gate)
                    {
                        _stream.Position = position;
                        return ScalarTypes.ReadContiguous(_stream, dtype, shape, Path, name);
                    }
                },
                () => MapTensor(position, dtype, shape));
        }
        catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw Corrupt($"tensor '{name}' has a malformed header entry ({ex.Message})");
        }
    }

    /// <summary>
    /// A view of the tensor in the file mapped privately (copy-on-write; libtorch's <c>from_file</c>), when its data
    /// is aligned to its element size; the mapping lives as long as any view of it.
    /// </summary>
    private torch.Tensor? MapTensor(long position, torch.ScalarType dtype, long[] shape)
    {
        int elementSize = ScalarTypes.ElementSize(dtype);
        if (position % elementSize != 0 || dtype == torch.ScalarType.Bool)
        {
            return null;
        }

        torch.Tensor mapped;
        lock (_gate)
        {
            if (!_mapped.TryGetValue(dtype, out mapped!))
            {
                // The whole file as elements of this dtype (the tail that is not a whole element is left out).
                mapped = torch.from_file(Path, shared: false, size: _stream.Length / elementSize, dtype: dtype);
                _mapped[dtype] = mapped;
            }
        }

        long count = shape.Aggregate(1L, (a, b) => a * b);
        using var flat = mapped.narrow(0, position / elementSize, count);
        return flat.view(shape);
    }

    private static torch.ScalarType? ParseDType(string name) => name switch
    {
        "F32" => torch.ScalarType.Float32,
        "F16" => torch.ScalarType.Float16,
        "BF16" => torch.ScalarType.BFloat16,
        "F64" => torch.ScalarType.Float64,
        "I64" => torch.ScalarType.Int64,
        "I32" => torch.ScalarType.Int32,
        "I16" => torch.ScalarType.Int16,
        "I8" => torch.ScalarType.Int8,
        "U8" => torch.ScalarType.Byte,
        "BOOL" => torch.ScalarType.Bool,
        _ => null,
    };

    private ModelLoadException Corrupt(string detail) =>
        new($"{Path}: not a valid safetensors file: {detail}.");

    public void Dispose()
    {
        _stream.Dispose();
        foreach (torch.Tensor mapped in _mapped.Values)
        {
            mapped.Dispose(); // views handed out keep their mapping alive
        }
    }
}
