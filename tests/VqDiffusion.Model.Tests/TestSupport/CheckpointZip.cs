using System.IO.Compression;
using System.Text;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>Writes a zip laid out like <c>torch.save</c>'s (<c>top/data.pkl</c>, <c>top/data/&lt;key&gt;</c>, <c>top/version</c>, <c>top/byteorder</c>).</summary>
public static class CheckpointZip
{
    public static void Write(string path, byte[] dataPkl, IReadOnlyDictionary<string, byte[]> storages, string top = "archive")
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create);
        Add(zip, $"{top}/data.pkl", dataPkl);
        Add(zip, $"{top}/byteorder", Encoding.ASCII.GetBytes("little"));
        foreach ((string key, byte[] data) in storages)
        {
            Add(zip, $"{top}/data/{key}", data);
        }

        Add(zip, $"{top}/version", Encoding.ASCII.GetBytes("3\n"));
    }

    private static void Add(ZipArchive zip, string name, byte[] data)
    {
        ZipArchiveEntry entry = zip.CreateEntry(name, CompressionLevel.NoCompression);
        using Stream s = entry.Open();
        s.Write(data);
    }
}
