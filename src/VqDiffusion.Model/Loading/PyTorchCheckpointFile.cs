using System.IO.Compression;
using System.Text;
using TorchSharp;
using VqDiffusion.Model.Loading.Pickle;

namespace VqDiffusion.Model.Loading;

/// <summary>
/// Reader for <c>torch.save</c> checkpoints in the zip format of torch &gt;= 1.6 (<c>pytorch_model.bin</c>,
/// <c>diffusion_pytorch_model.bin</c>): <c>&lt;top&gt;/data.pkl</c> is the pickled state_dict, each
/// storage is the raw little-endian entry <c>&lt;top&gt;/data/&lt;key&gt;</c>. The pickle is read at
/// <see cref="Open"/> by a safe unpickler with an allow-list of globals (<see cref="TorchUnpickler"/>),
/// which yields each tensor's storage, dtype, offset, shape and stride; storage bytes are read only by
/// <see cref="TensorEntry.Read"/>. The legacy (torch &lt; 1.6) format and nested checkpoints
/// (<c>{"state_dict": …}</c>) are rejected with an explanation.
/// </summary>
public sealed class PyTorchCheckpointFile : IWeightsFile
{
    private const long MaxPickleBytes = 1L << 30;

    // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2): the magic number the legacy format starts with.
    private static readonly byte[] LegacyMagic = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

    private readonly FileStream _stream;
    private readonly object _gate = new();
    private readonly Dictionary<string, TensorEntry> _tensors = new(StringComparer.Ordinal);
    private ZipArchive? _zip;

    private PyTorchCheckpointFile(string path, FileStream stream)
    {
        Path = path;
        _stream = stream;
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, TensorEntry> Tensors => _tensors;

    public static PyTorchCheckpointFile Open(string path)
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

        var file = new PyTorchCheckpointFile(path, stream);
        try
        {
            file.ReadIndex();
            return file;
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException)
        {
            file.Dispose();
            throw new ModelLoadException($"{path}: not a valid PyTorch checkpoint: the zip archive is corrupt or truncated ({ex.Message}).", ex);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private void ReadIndex()
    {
        CheckSignature();
        _zip = new ZipArchive(_stream, ZipArchiveMode.Read, leaveOpen: true);

        var pickles = _zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length).ToList();
        if (pickles.Count != 1)
        {
            throw Corrupt(pickles.Count == 0
                ? "the zip archive has no <top>/data.pkl entry, so it is not a torch.save checkpoint"
                : $"the zip archive has {pickles.Count} data.pkl entries ({string.Join(", ", pickles.Select(p => p.FullName))})");
        }

        ZipArchiveEntry pickleEntry = pickles[0];
        string prefix = pickleEntry.FullName[..^"data.pkl".Length];
        CheckByteOrder(prefix);

        object? root;
        try
        {
            root = TorchUnpickler.Load(ReadSmallEntry(pickleEntry, MaxPickleBytes));
        }
        catch (PickleException ex)
        {
            throw new ModelLoadException($"{Path}: cannot unpickle {pickleEntry.FullName}: {ex.Message}.");
        }

        if (root is not PickleDict dict)
        {
            throw Corrupt($"the top-level object is of type {PickleReader.TypeName(root)}, not a state_dict (a dict of name → tensor)");
        }

        foreach ((object key, object? value) in dict.Items)
        {
            if (value is PickleDict nested)
            {
                throw new ModelLoadException(
                    $"{Path}: entry '{key}' is a nested {PickleReader.TypeName(nested)}, not a tensor. This looks like a training checkpoint " +
                    $"that wraps the state_dict (e.g. {{'{key}': model.state_dict(), ...}}), which is not supported: save the inner " +
                    $"state_dict alone (torch.save(ckpt['{key}'], path)) or convert it to safetensors.");
            }
        }

        foreach ((object key, object? value) in dict.Items)
        {
            if (key is not string name)
            {
                throw Corrupt($"the state_dict has a key of type {PickleReader.TypeName(key)} ({key}); keys must be strings");
            }

            if (value is not TorchTensorRef tensor)
            {
                throw new ModelLoadException(
                    $"{Path}: entry '{name}' holds a value of type {PickleReader.TypeName(value)}, not a tensor; only flat state_dicts of tensors are supported.");
            }

            AddEntry(name, tensor, prefix);
        }
    }

    private void CheckSignature()
    {
        Span<byte> head = stackalloc byte[LegacyMagic.Length];
        int read = _stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        _stream.Position = 0;
        head = head[..read];
        if (head.StartsWith("PK"u8))
        {
            return;
        }

        if (head.SequenceEqual(LegacyMagic))
        {
            throw new ModelLoadException(
                $"{Path}: this checkpoint uses the legacy serialization of torch < 1.6, which is not supported. Re-save it with " +
                "torch >= 1.6 (torch.save(torch.load(path), path)) or convert it to safetensors.");
        }

        if (head.Length > 0 && head[0] == 0x80)
        {
            throw new ModelLoadException(
                $"{Path}: this is a bare pickle, not a torch.save zip archive (torch >= 1.6); it is not supported. Re-save it with " +
                "torch.save(state_dict, path) from torch >= 1.6 or convert it to safetensors.");
        }

        throw Corrupt($"the file ({_stream.Length} bytes) does not start with a zip signature");
    }

    private void CheckByteOrder(string prefix)
    {
        ZipArchiveEntry? entry = _zip!.GetEntry(prefix + "byteorder");
        if (entry is null)
        {
            return;
        }

        string order = Encoding.ASCII.GetString(ReadSmallEntry(entry, 64)).Trim();
        if (order != "little")
        {
            throw new ModelLoadException($"{Path}: the checkpoint was saved with byte order '{order}'; only little-endian checkpoints are supported.");
        }
    }

    private byte[] ReadSmallEntry(ZipArchiveEntry entry, long maxBytes)
    {
        if (entry.Length > maxBytes)
        {
            throw Corrupt($"{entry.FullName} is {entry.Length} bytes, more than the {maxBytes} allowed");
        }

        var bytes = new byte[entry.Length];
        using Stream s = entry.Open();
        try
        {
            s.ReadExactly(bytes);
        }
        catch (EndOfStreamException ex)
        {
            throw new ModelLoadException($"{Path}: {entry.FullName} is truncated. The checkpoint is incomplete or corrupt.", ex);
        }

        return bytes;
    }

    private void AddEntry(string name, TorchTensorRef tensor, string prefix)
    {
        string entryName = prefix + "data/" + tensor.Storage.Key;
        ZipArchiveEntry entry = _zip!.GetEntry(entryName)
            ?? throw Corrupt($"tensor '{name}' refers to storage '{tensor.Storage.Key}' but the archive has no {entryName}");
        if (entry.Length < tensor.Storage.ByteLength)
        {
            throw Corrupt(
                $"tensor '{name}' refers to {entryName} of {tensor.Storage.Numel} {ScalarTypes.Name(tensor.Storage.DType)} elements " +
                $"({tensor.Storage.ByteLength} bytes) but the entry has only {entry.Length} bytes (truncated storage)");
        }

        _tensors[name] = new TensorEntry(name, tensor.DType, tensor.Shape, Path, () => ReadTensor(name, tensor, entry));
    }

    private torch.Tensor ReadTensor(string name, TorchTensorRef tensor, ZipArchiveEntry entry)
    {
        if (tensor.NumElements == 0)
        {
            return torch.empty(tensor.Shape, tensor.DType, torch.CPU);
        }

        long elementSize = ScalarTypes.ElementSize(tensor.DType);
        long extent = tensor.Extent();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_zip is null, this);
            try
            {
                using Stream stream = entry.Open();
                Skip(stream, tensor.StorageOffset * elementSize, name);
                using torch.Tensor flat = ScalarTypes.ReadContiguous(stream, tensor.DType, [extent], Path, name);
                if (tensor.IsContiguous)
                {
                    return flat.reshape(tensor.Shape);
                }

                using torch.Tensor view = flat.as_strided(tensor.Shape, tensor.Stride, 0);
                torch.Tensor result = torch.empty(tensor.Shape, tensor.DType, torch.CPU);
                result.copy_(view);
                return result;
            }
            catch (Exception ex) when (ex is InvalidDataException or (IOException and not EndOfStreamException))
            {
                throw new ModelLoadException($"{Path}: cannot read tensor '{name}' from {entry.FullName}: {ex.Message}", ex);
            }
        }
    }

    private void Skip(Stream stream, long bytes, string name)
    {
        if (bytes == 0)
        {
            return;
        }

        if (stream.CanSeek)
        {
            stream.Seek(bytes, SeekOrigin.Current);
            return;
        }

        var buffer = new byte[(int)Math.Min(bytes, 1 << 20)];
        while (bytes > 0)
        {
            int n = stream.Read(buffer, 0, (int)Math.Min(bytes, buffer.Length));
            if (n == 0)
            {
                throw new ModelLoadException($"{Path}: tensor '{name}' is truncated (its storage ends before the tensor's offset). The checkpoint is incomplete or corrupt.");
            }

            bytes -= n;
        }
    }

    private ModelLoadException Corrupt(string detail) =>
        new($"{Path}: not a valid PyTorch checkpoint: {detail}.");

    public void Dispose()
    {
        lock (_gate)
        {
            _zip?.Dispose();
            _zip = null;
            _stream.Dispose();
        }
    }
}
