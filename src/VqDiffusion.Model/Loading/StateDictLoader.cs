using TorchSharp;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Loading;

/// <summary>
/// Strict state_dict loading: every key of the module must be present in the files with the same
/// shape, and every key of the files must belong to the module (after <see cref="LoadOptions.RenameKey"/>).
/// Floating-point tensors are converted to the parameter's dtype and device; nothing else is converted.
/// </summary>
public static class StateDictLoader
{
    private const int MaxListed = 8;

    public static void Load(nn.Module module, IReadOnlyList<string> files, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        var opened = new List<IWeightsFile>();
        try
        {
            foreach (string f in files)
            {
                opened.Add(WeightsLocator.Open(f));
            }

            Load(module, opened, options);
        }
        finally
        {
            foreach (var f in opened)
            {
                f.Dispose();
            }
        }
    }

    public static void Load(nn.Module module, IReadOnlyList<IWeightsFile> files, LoadOptions options)
    {
        using var noGrad = torch.no_grad();
        foreach (var (_, target, entry) in Match(module, files, options))
        {
            if (target.device_type == DeviceType.META)
            {
                continue;
            }

            using Tensor value = entry.Map() ?? entry.Read();
            target.copy_(value);
        }
    }

    /// <summary>
    /// Loads a module built on the meta device (no storage, no random initialisation): every parameter and
    /// buffer becomes the tensor read from the files, converted to the meta tensor's dtype, on
    /// <paramref name="device"/> — one read per tensor and no copy into an initialised parameter. The same strict
    /// key and shape checks as <see cref="Load(nn.Module, IReadOnlyList{string}, LoadOptions?)"/>; afterwards no
    /// tensor of the module may still be on the meta device.
    /// </summary>
    public static void Materialize(nn.Module module, IReadOnlyList<string> files, Device device, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        var opened = new List<IWeightsFile>();
        try
        {
            foreach (string f in files)
            {
                opened.Add(WeightsLocator.Open(f));
            }

            using var noGrad = torch.no_grad();
            var byKey = Match(module, opened, options).ToDictionary(m => m.Key, m => m.Entry, StringComparer.Ordinal);
            MetaModules.Materialize(module, (key, meta) =>
            {
                if (!byKey.TryGetValue(key, out TensorEntry? entry))
                {
                    throw new ModelLoadException(
                        $"{module.GetType().Name}: '{key}' {ScalarTypes.FormatShape(meta.shape)} is not in the state_dict, so it cannot be loaded from {string.Join(", ", files)}.");
                }

                Tensor value = entry.Map() ?? entry.Read();
                ScalarType dtype = ScalarTypes.IsFloating(value.dtype) ? meta.dtype : value.dtype;
                if (value.dtype == dtype && device.type == DeviceType.CPU)
                {
                    return value;
                }

                using (value)
                {
                    return value.to(dtype, device);
                }
            });
        }
        finally
        {
            foreach (var f in opened)
            {
                f.Dispose();
            }
        }
    }

    /// <summary>Strict matching of the module's state_dict with the files' tensors (keys, shapes, kinds of dtype).</summary>
    private static List<(string Key, Tensor Target, TensorEntry Entry)> Match(nn.Module module, IReadOnlyList<IWeightsFile> files, LoadOptions options)
    {
        Dictionary<string, Tensor> expected = module.state_dict();
        var found = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        foreach (IWeightsFile file in files)
        {
            foreach (var (storedKey, entry) in file.Tensors)
            {
                string? key = options.RenameKey?.Invoke(storedKey) ?? storedKey;
                if (options.IgnoreKey?.Invoke(storedKey) == true)
                {
                    continue;
                }

                if (!expected.ContainsKey(key))
                {
                    unexpected.Add($"'{storedKey}' {ScalarTypes.FormatShape(entry.Shape)} in {file.Path}");
                    continue;
                }

                if (!found.TryAdd(key, entry))
                {
                    throw new ModelLoadException($"{file.Path}: key '{storedKey}' is stored twice (also in {found[key].File}).");
                }
            }
        }

        string where = string.Join(", ", files.Select(f => f.Path));
        var missing = expected.Keys.Where(k => !found.ContainsKey(k)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0)
            {
                parts.Add($"{missing.Count} missing key(s): " + string.Join(", ",
                    missing.Take(MaxListed).Select(k => $"'{k}' {ScalarTypes.FormatShape(expected[k].shape)}")) + (missing.Count > MaxListed ? ", ..." : string.Empty));
            }

            if (unexpected.Count > 0)
            {
                parts.Add($"{unexpected.Count} unexpected key(s): " + string.Join(", ", unexpected.Take(MaxListed)) + (unexpected.Count > MaxListed ? ", ..." : string.Empty));
            }

            throw new ModelLoadException($"{where}: weights do not match {module.GetType().Name}: {string.Join("; ", parts)}.");
        }

        var matched = new List<(string, Tensor, TensorEntry)>(expected.Count);
        foreach (var (key, target) in expected)
        {
            TensorEntry entry = found[key];
            if (!entry.Shape.SequenceEqual(target.shape))
            {
                throw new ModelLoadException(
                    $"{entry.File}: shape mismatch for '{entry.Name}': the checkpoint has {ScalarTypes.FormatShape(entry.Shape)}, {module.GetType().Name} expects {ScalarTypes.FormatShape(target.shape)}.");
            }

            if (ScalarTypes.IsFloating(entry.DType) != ScalarTypes.IsFloating(target.dtype))
            {
                throw new ModelLoadException(
                    $"{entry.File}: dtype mismatch for '{entry.Name}': the checkpoint has {ScalarTypes.Name(entry.DType)}, {module.GetType().Name} expects {ScalarTypes.Name(target.dtype)}.");
            }

            matched.Add((key, target, entry));
        }

        return matched;
    }
}

/// <summary>Options of <see cref="StateDictLoader"/>.</summary>
public sealed class LoadOptions
{
    /// <summary>Maps a stored key to the module's key (e.g. deprecated attention names); identity when null.</summary>
    public Func<string, string>? RenameKey { get; init; }

    /// <summary>Stored keys to skip (e.g. the <c>position_ids</c> buffer older transformers saved).</summary>
    public Func<string, bool>? IgnoreKey { get; init; }
}
