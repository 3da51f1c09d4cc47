using System.Text.Json;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Configuration;

/// <summary>
/// <c>model_index.json</c> of a diffusers pipeline folder: the pipeline class and, per component,
/// its library and class name (<c>"transformer": ["diffusers", "Transformer2DModel"]</c>).
/// </summary>
public sealed class ModelIndex
{
    public required string ClassName { get; init; }

    public required IReadOnlyDictionary<string, (string Library, string ClassName)> Components { get; init; }

    public static ModelIndex Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"{path}: model_index.json does not exist; is this a diffusers pipeline folder?");
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            string className = root.TryGetProperty("_class_name", out var c) ? c.GetString() ?? string.Empty : string.Empty;
            var components = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
            foreach (var prop in root.EnumerateObject())
            {
                if (prop.Name.StartsWith('_') || prop.Value.ValueKind != JsonValueKind.Array || prop.Value.GetArrayLength() != 2)
                {
                    continue;
                }

                components[prop.Name] = (prop.Value[0].GetString() ?? string.Empty, prop.Value[1].GetString() ?? string.Empty);
            }

            return new ModelIndex { ClassName = className, Components = components };
        }
        catch (JsonException ex)
        {
            throw new ModelLoadException($"{path}: invalid JSON: {ex.Message}", ex);
        }
    }
}
