using System.Text.Json;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Configuration;

/// <summary>
/// Reads a component's <c>config.json</c>. Unknown keys are ignored; keys that are absent keep the
/// defaults of the config class (which are diffusers' / transformers' defaults).
/// </summary>
public static class ConfigFile
{
    private static readonly JsonSerializerOptions Options = new()
    {
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static T Load<T>(string path)
        where T : class
    {
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"{path}: config file does not exist.");
        }

        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllBytes(path), Options)
                ?? throw new ModelLoadException($"{path}: config file is empty (null).");
        }
        catch (JsonException ex)
        {
            throw new ModelLoadException($"{path}: invalid config for {typeof(T).Name}: {ex.Message}", ex);
        }
    }

    /// <summary>Throws a <see cref="ModelLoadException"/> naming the file and the key when a required value is missing.</summary>
    public static TValue Required<TValue>(TValue? value, string path, string key)
        where TValue : struct =>
        value ?? throw new ModelLoadException($"{path}: required key '{key}' is missing.");
}
