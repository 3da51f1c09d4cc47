using System.Text;
using System.Text.Json;
using TorchSharp;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>Writes safetensors files for loader tests (renamed keys, other dtypes, shards).</summary>
public static class SafeTensorsTestWriter
{
    public static void Write(string path, IReadOnlyList<(string Name, torch.Tensor Tensor)> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        var blobs = new List<byte[]>();
        foreach (var (name, t) in tensors)
        {
            using var c = t.contiguous();
            byte[] data = c.bytes.ToArray();
            header[name] = new
            {
                dtype = t.dtype switch
                {
                    torch.ScalarType.Float16 => "F16",
                    torch.ScalarType.BFloat16 => "BF16",
                    torch.ScalarType.Int64 => "I64",
                    _ => "F32",
                },
                shape = t.shape,
                data_offsets = new[] { offset, offset + data.Length },
            };
            offset += data.Length;
            blobs.Add(data);
        }

        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((long)json.Length));
        stream.Write(json);
        foreach (byte[] blob in blobs)
        {
            stream.Write(blob);
        }
    }

    private static List<(string, torch.Tensor)> ReadAll(string source)
    {
        using var file = SafeTensorsFile.Open(source);
        return file.Tensors.Select(kv => (kv.Key, kv.Value.Read())).ToList();
    }

    public static void WriteRenamed(string source, string path, string from, string to) =>
        Write(path, ReadAll(source).Select(p => (p.Item1 == from ? to : p.Item1, p.Item2)).ToList());

    public static void WriteConverted(string source, string path, torch.ScalarType dtype) =>
        Write(path, ReadAll(source).Select(p => (p.Item1, p.Item2.to(dtype))).ToList());

    public static void WriteSharded(string source, string dir, string baseName, int shards)
    {
        var all = ReadAll(source);
        var weightMap = new Dictionary<string, string>();
        int perShard = (all.Count + shards - 1) / shards;
        for (int s = 0; s < shards; s++)
        {
            string name = $"{baseName}-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = all.Skip(s * perShard).Take(perShard).ToList();
            Write(Path.Combine(dir, name), part);
            foreach (var (key, _) in part)
            {
                weightMap[key] = name;
            }
        }

        File.WriteAllText(Path.Combine(dir, baseName + ".safetensors.index.json"), JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = weightMap }));
    }
}
