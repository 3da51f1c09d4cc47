using TorchSharp;

namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// Unpickles the <c>data.pkl</c> of a <c>torch.save</c> zip archive with an allow-list of globals: the
/// objects a state_dict is made of (<c>collections.OrderedDict</c>, <c>torch._utils._rebuild_tensor_v2</c>/<c>_v3</c>,
/// <c>torch._utils._rebuild_parameter</c>, the <c>torch.*Storage</c> classes, <c>torch</c> dtypes) and the
/// persistent id <c>('storage', storage_type, key, location, numel)</c>. Tensors come back as
/// <see cref="TorchTensorRef"/> descriptions; no data is read and no code from the file runs.
/// </summary>
internal static class TorchUnpickler
{
    private static readonly Dictionary<string, torch.ScalarType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = torch.ScalarType.Float32,
        ["DoubleStorage"] = torch.ScalarType.Float64,
        ["HalfStorage"] = torch.ScalarType.Float16,
        ["BFloat16Storage"] = torch.ScalarType.BFloat16,
        ["LongStorage"] = torch.ScalarType.Int64,
        ["IntStorage"] = torch.ScalarType.Int32,
        ["ShortStorage"] = torch.ScalarType.Int16,
        ["CharStorage"] = torch.ScalarType.Int8,
        ["ByteStorage"] = torch.ScalarType.Byte,
        ["BoolStorage"] = torch.ScalarType.Bool,
        ["UntypedStorage"] = torch.ScalarType.Byte,
    };

    private static readonly Dictionary<string, torch.ScalarType> DTypes = new(StringComparer.Ordinal)
    {
        ["float32"] = torch.ScalarType.Float32,
        ["float"] = torch.ScalarType.Float32,
        ["float64"] = torch.ScalarType.Float64,
        ["double"] = torch.ScalarType.Float64,
        ["float16"] = torch.ScalarType.Float16,
        ["half"] = torch.ScalarType.Float16,
        ["bfloat16"] = torch.ScalarType.BFloat16,
        ["int64"] = torch.ScalarType.Int64,
        ["long"] = torch.ScalarType.Int64,
        ["int32"] = torch.ScalarType.Int32,
        ["int"] = torch.ScalarType.Int32,
        ["int16"] = torch.ScalarType.Int16,
        ["short"] = torch.ScalarType.Int16,
        ["int8"] = torch.ScalarType.Int8,
        ["uint8"] = torch.ScalarType.Byte,
        ["bool"] = torch.ScalarType.Bool,
    };

    private static readonly PickleFunction OrderedDict = new("collections.OrderedDict", NewOrderedDict);
    private static readonly PickleFunction RebuildTensorV2 = new("torch._utils._rebuild_tensor_v2", args => RebuildTensor(args, v3: false));
    private static readonly PickleFunction RebuildTensorV3 = new("torch._utils._rebuild_tensor_v3", args => RebuildTensor(args, v3: true));
    private static readonly PickleFunction RebuildParameter = new("torch._utils._rebuild_parameter", args => RebuildParameterData(args, 3));
    private static readonly PickleFunction RebuildParameterWithState = new("torch._utils._rebuild_parameter_with_state", args => RebuildParameterData(args, 4));
    private static readonly PickleFunction Size = new("torch.Size", args => args.Count == 1 && args[0] is PickleTuple t ? t : throw new PickleException("torch.Size expects one tuple"));

    /// <summary>Unpickles <paramref name="pickle"/>; throws <see cref="PickleException"/> on anything unexpected.</summary>
    public static object? Load(ReadOnlyMemory<byte> pickle)
    {
        var storages = new Dictionary<string, TorchStorageRef>(StringComparer.Ordinal);
        var reader = new PickleReader(pickle, FindGlobal, pid => PersistentLoad(pid, storages));
        return reader.Load();
    }

    /// <summary>The allow-list. Anything else is refused, so a malicious pickle cannot reach real code.</summary>
    internal static object FindGlobal(string module, string name)
    {
        switch (module, name)
        {
            case ("collections", "OrderedDict"):
                return OrderedDict;
            case ("torch._utils", "_rebuild_tensor_v2"):
                return RebuildTensorV2;
            case ("torch._utils", "_rebuild_tensor_v3"):
                return RebuildTensorV3;
            case ("torch._utils", "_rebuild_parameter"):
                return RebuildParameter;
            case ("torch._utils", "_rebuild_parameter_with_state"):
                return RebuildParameterWithState;
            case ("torch", "Size"):
                return Size;
        }

        if (module == "torch" && StorageTypes.TryGetValue(name, out torch.ScalarType storageDType))
        {
            return new TorchStorageType(name, storageDType);
        }

        if (module == "torch" && DTypes.TryGetValue(name, out torch.ScalarType dtype))
        {
            return new TorchDType(name, dtype);
        }

        if (module == "torch" && name.EndsWith("Storage", StringComparison.Ordinal))
        {
            throw new PickleException($"unsupported storage type 'torch.{name}' (supported: {string.Join(", ", StorageTypes.Keys.Select(k => "torch." + k))})");
        }

        throw new PickleException(
            $"the pickle references the global '{module}.{name}', which is not allowed in a state_dict checkpoint " +
            "(only tensors, parameters, storages and OrderedDict are); it was not executed");
    }

    private static PickleDict NewOrderedDict(PickleTuple args)
    {
        var dict = new PickleDict(ordered: true);
        if (args.Count == 0)
        {
            return dict;
        }

        if (args.Count == 1 && args[0] is List<object?> pairs)
        {
            foreach (object? pair in pairs)
            {
                if (pair is not PickleTuple { Count: 2 } kv)
                {
                    throw new PickleException($"collections.OrderedDict expects (key, value) pairs, got {PickleReader.TypeName(pair)}");
                }

                dict.Set(kv[0], kv[1]);
            }

            return dict;
        }

        throw new PickleException($"collections.OrderedDict called with {args.Count} unsupported arguments");
    }

    private static object? PersistentLoad(object? pid, Dictionary<string, TorchStorageRef> storages)
    {
        if (pid is not PickleTuple { Count: 5 } t || t[0] is not "storage")
        {
            throw new PickleException($"unsupported persistent id {PickleReader.TypeName(pid)} {pid} (expected ('storage', type, key, location, numel))");
        }

        if (t[1] is not TorchStorageType type)
        {
            throw new PickleException($"persistent id names storage type {PickleReader.TypeName(t[1])}, expected a torch.*Storage class");
        }

        if (t[2] is not string { Length: > 0 } key || key.Contains('/') || key.Contains('\\'))
        {
            throw new PickleException($"persistent id has an invalid storage key {PickleReader.TypeName(t[2])} '{t[2]}'");
        }

        string location = t[3] as string ?? throw new PickleException($"storage '{key}' has a location of type {PickleReader.TypeName(t[3])}, expected a string");
        if (t[4] is not long numel || numel < 0)
        {
            throw new PickleException($"storage '{key}' has an invalid element count {t[4]}");
        }

        var storage = new TorchStorageRef(key, type.DType, numel, location);
        try
        {
            _ = checked(numel * ScalarTypes.ElementSize(type.DType));
        }
        catch (OverflowException)
        {
            throw new PickleException($"storage '{key}' is too large ({numel} elements)");
        }

        if (storages.TryGetValue(key, out TorchStorageRef? existing))
        {
            if (existing.DType != storage.DType || existing.Numel != storage.Numel)
            {
                throw new PickleException($"storage '{key}' is referenced as both {ScalarTypes.Name(existing.DType)}[{existing.Numel}] and {ScalarTypes.Name(storage.DType)}[{storage.Numel}]");
            }

            return existing;
        }

        storages[key] = storage;
        return storage;
    }

    private static TorchTensorRef RebuildTensor(PickleTuple args, bool v3)
    {
        string fn = v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2";
        int required = v3 ? 7 : 6;
        if (args.Count != required && args.Count != required + 1)
        {
            throw new PickleException($"{fn} called with {args.Count} arguments, expected {required} or {required + 1}");
        }

        var storage = args[0] as TorchStorageRef ?? throw new PickleException($"{fn}: first argument is {PickleReader.TypeName(args[0])}, expected a storage");
        long offset = args[1] is long o && o >= 0 ? o : throw new PickleException($"{fn}: invalid storage offset {args[1]}");
        long[] shape = IntTuple(args[2], fn, "size");
        long[] stride = IntTuple(args[3], fn, "stride");
        if (shape.Length != stride.Length)
        {
            throw new PickleException($"{fn}: size {ScalarTypes.FormatShape(shape)} and stride {ScalarTypes.FormatShape(stride)} have different lengths");
        }

        if (args[4] is not bool)
        {
            throw new PickleException($"{fn}: requires_grad is {PickleReader.TypeName(args[4])}, expected a bool");
        }

        torch.ScalarType dtype = storage.DType;
        if (v3)
        {
            dtype = args[6] is TorchDType d ? d.Value : throw new PickleException($"{fn}: dtype is {PickleReader.TypeName(args[6])}, expected a torch dtype");
        }

        var tensor = new TorchTensorRef(storage, dtype, offset, shape, stride);
        CheckBounds(tensor, fn);
        return tensor;
    }

    private static void CheckBounds(TorchTensorRef tensor, string fn)
    {
        if (tensor.Shape.Any(d => d < 0) || tensor.Stride.Any(s => s < 0))
        {
            throw new PickleException($"{fn}: negative size {ScalarTypes.FormatShape(tensor.Shape)} or stride {ScalarTypes.FormatShape(tensor.Stride)}");
        }

        try
        {
            long elementSize = ScalarTypes.ElementSize(tensor.DType);
            _ = checked(tensor.NumElements * elementSize);
            long end = checked((tensor.StorageOffset + tensor.Extent()) * elementSize);
            if (end > tensor.Storage.ByteLength)
            {
                throw new PickleException(
                    $"{fn}: a {ScalarTypes.Name(tensor.DType)} tensor of size {ScalarTypes.FormatShape(tensor.Shape)}, stride {ScalarTypes.FormatShape(tensor.Stride)} " +
                    $"at offset {tensor.StorageOffset} needs {end} bytes but {tensor.Storage} has {tensor.Storage.ByteLength}");
            }
        }
        catch (OverflowException)
        {
            throw new PickleException($"{fn}: size {ScalarTypes.FormatShape(tensor.Shape)} and stride {ScalarTypes.FormatShape(tensor.Stride)} overflow");
        }
    }

    private static long[] IntTuple(object? value, string fn, string what)
    {
        if (value is not PickleTuple t)
        {
            throw new PickleException($"{fn}: {what} is {PickleReader.TypeName(value)}, expected a tuple of ints");
        }

        var result = new long[t.Count];
        for (int i = 0; i < t.Count; i++)
        {
            result[i] = t[i] is long v ? v : throw new PickleException($"{fn}: {what} {t} contains a {PickleReader.TypeName(t[i])}");
        }

        return result;
    }

    private static TorchTensorRef RebuildParameterData(PickleTuple args, int count)
    {
        if (args.Count != count)
        {
            throw new PickleException($"_rebuild_parameter called with {args.Count} arguments, expected {count}");
        }

        return args[0] as TorchTensorRef ?? throw new PickleException($"_rebuild_parameter: data is {PickleReader.TypeName(args[0])}, expected a tensor");
    }
}
