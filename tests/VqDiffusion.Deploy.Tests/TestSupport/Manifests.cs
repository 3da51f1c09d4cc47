using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace VqDiffusion.Deploy.Tests.TestSupport;

/// <summary>The YAML files of deploy/kubernetes, parsed (YamlDotNet's representation model), with small path helpers.</summary>
public static class Manifests
{
    /// <summary>Every document of every *.yaml file: (file name, root mapping).</summary>
    public static IReadOnlyList<(string File, YamlMappingNode Root)> All()
    {
        var documents = new List<(string, YamlMappingNode)>();
        foreach (string path in Directory.GetFiles(Repo.KubernetesDir, "*.yaml").Order(StringComparer.Ordinal))
        {
            var stream = new YamlStream();
            using (var reader = new StreamReader(path))
            {
                stream.Load(reader);
            }

            foreach (YamlDocument document in stream.Documents)
            {
                documents.Add((Path.GetFileName(path), Assert.IsType<YamlMappingNode>(document.RootNode)));
            }
        }

        return documents;
    }

    public static YamlMappingNode OfKind(string kind, string? name = null) =>
        Assert.Single(All(), d => Str(d.Root, "kind") == kind && (name is null || Str(d.Root, "metadata", "name") == name)).Root;

    /// <summary>The node at <paramref name="path"/> (mapping keys, or list indexes as numbers), or null.</summary>
    public static YamlNode? At(YamlNode node, params string[] path)
    {
        YamlNode? current = node;
        foreach (string key in path)
        {
            current = current switch
            {
                YamlMappingNode map => map.Children.TryGetValue(new YamlScalarNode(key), out YamlNode? child) ? child : null,
                YamlSequenceNode seq when int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < seq.Children.Count => seq.Children[i],
                _ => null,
            };
            if (current is null)
            {
                return null;
            }
        }

        return current;
    }

    public static string? Str(YamlNode node, params string[] path) => (At(node, path) as YamlScalarNode)?.Value;

    public static int Int(YamlNode node, params string[] path)
    {
        string? value = Str(node, path);
        Assert.True(value is not null, $"{string.Join('.', path)} is missing");
        return int.Parse(value!, NumberStyles.Integer, CultureInfo.InvariantCulture);
    }

    public static IReadOnlyList<YamlNode> List(YamlNode node, params string[] path) =>
        (At(node, path) as YamlSequenceNode)?.Children.ToArray() ?? [];

    public static Dictionary<string, string> Map(YamlNode node, params string[] path) =>
        (At(node, path) as YamlMappingNode)?.Children.ToDictionary(kv => ((YamlScalarNode)kv.Key).Value!, kv => ((YamlScalarNode)kv.Value).Value ?? "")
        ?? [];

    /// <summary>Whether every label of <paramref name="selector"/> is set to the same value in <paramref name="labels"/>.</summary>
    public static bool Selects(IReadOnlyDictionary<string, string> selector, IReadOnlyDictionary<string, string> labels) =>
        selector.Count > 0 && selector.All(kv => labels.TryGetValue(kv.Key, out string? v) && v == kv.Value);
}
