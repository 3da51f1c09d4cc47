using System.Globalization;
using System.Text.RegularExpressions;

namespace VqDiffusion.Server.Tests.TestSupport;

/// <summary>One scrape in the Prometheus text exposition format: its samples, by name and labels.</summary>
public sealed partial class PrometheusText
{
    private PrometheusText(string text, List<(string Name, Dictionary<string, string> Labels, double Value)> samples)
    {
        Text = text;
        Samples = samples;
    }

    public string Text { get; }

    public IReadOnlyList<(string Name, Dictionary<string, string> Labels, double Value)> Samples { get; }

    public static PrometheusText Parse(string text)
    {
        var samples = new List<(string, Dictionary<string, string>, double)>();
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            Match m = SampleLine().Match(line);
            Assert.True(m.Success, $"not a sample line: {line}");
            var labels = new Dictionary<string, string>();
            foreach (Match label in LabelPair().Matches(m.Groups["labels"].Value))
            {
                labels[label.Groups[1].Value] = Regex.Unescape(label.Groups[2].Value);
            }

            double value = m.Groups["value"].Value switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                "NaN" => double.NaN,
                string v => double.Parse(v, NumberStyles.Float, CultureInfo.InvariantCulture),
            };
            samples.Add((m.Groups["name"].Value, labels, value));
        }

        return new PrometheusText(text, samples);
    }

    /// <summary>Names of the series (metric families' samples) in the scrape.</summary>
    public IReadOnlySet<string> Names => Samples.Select(s => s.Name).ToHashSet();

    /// <summary>The single sample named <paramref name="name"/> whose labels include <paramref name="labels"/> (name=value pairs).</summary>
    public double Value(string name, params string[] labels)
    {
        var matches = Find(name, labels).ToList();
        Assert.True(matches.Count == 1, $"expected one sample {name}{{{string.Join(",", labels)}}}, found {matches.Count} in:\n{Text}");
        return matches[0].Value;
    }

    /// <summary>The sample's value, or null when there is none.</summary>
    public double? ValueOrNull(string name, params string[] labels) => Find(name, labels).Select(s => (double?)s.Value).SingleOrDefault();

    private IEnumerable<(string Name, Dictionary<string, string> Labels, double Value)> Find(string name, string[] labels) =>
        Samples.Where(s => s.Name == name && labels.All(l =>
        {
            string[] kv = l.Split('=', 2);
            return s.Labels.TryGetValue(kv[0], out string? v) && v == kv[1];
        }));

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})?\s+(?<value>\S+)(\s+\S+)?$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"([a-zA-Z_][a-zA-Z0-9_]*)=""((?:[^""\\]|\\.)*)""")]
    private static partial Regex LabelPair();
}
