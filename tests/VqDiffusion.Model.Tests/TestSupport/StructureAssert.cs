using System.Text.Json;
using TorchSharp;
using VqDiffusion.Model.Loading;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>
/// Compares a module's state_dict (names, shapes, dtypes) with the key list of the real ITHQ checkpoint recorded in
/// <c>tests/fixtures/ithq-structure/state_dict.json</c>.
/// </summary>
public static class StructureAssert
{
    /// <summary>One entry of <c>state_dict.json</c>: key, shape and dtype name (e.g. <c>float32</c>).</summary>
    public sealed record KeyInfo(string Key, long[] Shape, string DType);

    /// <summary>A component of <c>state_dict.json</c>.</summary>
    public sealed record ComponentInfo(string Component, IReadOnlyList<KeyInfo> Keys, long NumParameters);

    /// <summary>What <see cref="MatchesIthq"/> measured.</summary>
    public sealed record Result(int NumKeys, long NumParameters, bool OrderMatches);

    public static ComponentInfo ReadIthq(string component)
    {
        string path = Path.Combine(Fixtures.IthqStructure, "state_dict.json");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        JsonElement c = doc.RootElement.GetProperty("components").GetProperty(component);
        var keys = c.GetProperty("keys").EnumerateArray()
            .Select(k => new KeyInfo(
                k.GetProperty("key").GetString()!,
                k.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray(),
                k.GetProperty("dtype").GetString()!))
            .ToList();
        return new ComponentInfo(component, keys, c.GetProperty("num_parameters").GetInt64());
    }

    /// <summary>
    /// Asserts that the module's state_dict has exactly the keys of <paramref name="component"/> in the real ITHQ
    /// checkpoint, with the same shapes and dtypes, and that its parameters count the same. Key order is reported
    /// (in <see cref="Result.OrderMatches"/> and the test output), not asserted.
    /// </summary>
    public static Result MatchesIthq(torch.nn.Module module, string component, ITestOutputHelper output)
    {
        ComponentInfo expected = ReadIthq(component);
        var actual = module.state_dict()
            .Select(kv => new KeyInfo(kv.Key, kv.Value.shape, ScalarTypes.Name(kv.Value.dtype)))
            .ToList();

        var expectedByKey = expected.Keys.ToDictionary(k => k.Key, StringComparer.Ordinal);
        var actualByKey = actual.ToDictionary(k => k.Key, StringComparer.Ordinal);
        var missing = expected.Keys.Where(k => !actualByKey.ContainsKey(k.Key)).Select(k => k.Key).ToList();
        var unexpected = actual.Where(k => !expectedByKey.ContainsKey(k.Key)).Select(k => k.Key).ToList();
        var wrongShape = actual
            .Where(k => expectedByKey.TryGetValue(k.Key, out var e) && (!e.Shape.SequenceEqual(k.Shape) || e.DType != k.DType))
            .Select(k => $"{k.Key}: {k.DType}[{string.Join(", ", k.Shape)}] vs expected {expectedByKey[k.Key].DType}[{string.Join(", ", expectedByKey[k.Key].Shape)}]")
            .ToList();

        long numParameters = module.parameters().Sum(p => p.numel());
        bool orderMatches = expected.Keys.Select(k => k.Key).SequenceEqual(actual.Select(k => k.Key), StringComparer.Ordinal);

        output.WriteLine($"{component}: {actual.Count} keys (checkpoint {expected.Keys.Count}), {numParameters:N0} parameters (checkpoint {expected.NumParameters:N0}), key order {(orderMatches ? "matches" : "differs")}");
        foreach (string line in missing.Take(10).Select(k => "missing: " + k)
            .Concat(unexpected.Take(10).Select(k => "unexpected: " + k))
            .Concat(wrongShape.Take(10).Select(k => "shape/dtype: " + k)))
        {
            output.WriteLine("  " + line);
        }

        Assert.True(missing.Count == 0, $"{component}: {missing.Count} checkpoint key(s) missing in the module, first: {string.Join(", ", missing.Take(5))}");
        Assert.True(unexpected.Count == 0, $"{component}: {unexpected.Count} module key(s) not in the checkpoint, first: {string.Join(", ", unexpected.Take(5))}");
        Assert.True(wrongShape.Count == 0, $"{component}: {wrongShape.Count} key(s) differ in shape or dtype, first: {string.Join("; ", wrongShape.Take(5))}");
        Assert.Equal(expected.Keys.Count, actual.Count);
        Assert.Equal(expected.NumParameters, numParameters);
        return new Result(actual.Count, numParameters, orderMatches);
    }
}
