using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Loading;

public sealed class SafeTensorsFileTests : IDisposable
{
    private static readonly string TransformerSafetensors = Path.Combine(Fixtures.TinyModel, "transformer", "diffusion_pytorch_model.safetensors");

    private readonly ITestOutputHelper _output;
    private readonly TempDirectory _temp = new();

    public SafeTensorsFileTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _temp.Dispose();

    /// <summary>Writes a safetensors file: 8-byte header length, the JSON header, then the data.</summary>
    private string Write(string name, string header, byte[] data, long? declaredHeaderLength = null)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        var prefix = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(prefix, declaredHeaderLength ?? json.Length);
        string path = _temp.File(name);
        File.WriteAllBytes(path, [.. prefix, .. json, .. data]);
        return path;
    }

    [Fact]
    public void Hand_written_file_reads_back_values_dtypes_shapes_and_metadata()
    {
        float[] floats = [1f, -2.5f, 3.25f, 1e-8f, float.MaxValue, -0f];
        long[] longs = [long.MinValue, 7, long.MaxValue];
        byte[] data = [.. MemoryMarshal.AsBytes(floats.AsSpan()), .. MemoryMarshal.AsBytes(longs.AsSpan())];
        string path = Write(
            "ok.safetensors",
            """{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"ids":{"dtype":"I64","shape":[3],"data_offsets":[24,48]},"s":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}""",
            data);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(3, file.Tensors.Count);

        using torch.Tensor w = file.Tensors["w"].Read();
        Assert.Equal(torch.ScalarType.Float32, w.dtype);
        Assert.Equal([2L, 3L], w.shape);
        Assert.Equal(floats, w.data<float>().ToArray());

        using torch.Tensor ids = file.Tensors["ids"].Read();
        Assert.Equal(torch.ScalarType.Int64, ids.dtype);
        Assert.Equal(longs, ids.data<long>().ToArray());

        using torch.Tensor s = file.Tensors["s"].Read();
        Assert.Empty(s.shape);
        Assert.Equal(-2.5f, s.item<float>());
    }

    [Fact]
    public void Fixture_opens_and_every_tensor_reads_with_its_declared_shape()
    {
        using var file = SafeTensorsFile.Open(TransformerSafetensors);
        Assert.NotEmpty(file.Tensors);
        foreach (TensorEntry entry in file.Tensors.Values)
        {
            using torch.Tensor t = entry.Read();
            Assert.Equal(entry.Shape, t.shape);
            Assert.Equal(entry.DType, t.dtype);
        }
    }

    [Fact]
    public void Truncated_file_is_rejected_with_the_path()
    {
        byte[] all = File.ReadAllBytes(TransformerSafetensors);
        string path = _temp.File("half.safetensors");
        File.WriteAllBytes(path, all[..(all.Length / 2)]);

        var ex = Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("truncated", ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Fact]
    public void File_shorter_than_the_length_prefix_is_rejected()
    {
        string path = _temp.File("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);

        var ex = Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message);
    }

    [Fact]
    public void Header_length_larger_than_the_file_is_rejected()
    {
        string path = Write("long-header.safetensors", "{}", [], declaredHeaderLength: 1_000_000);

        var ex = Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("1000000", ex.Message);
    }

    [Theory]
    [InlineData("{\"w\": {\"dtype\": \"F32\",")]
    [InlineData("not json at all")]
    [InlineData("[1, 2, 3]")]
    public void Bad_json_header_is_rejected(string header)
    {
        string path = Write("bad-json.safetensors", header, new byte[16]);

        var ex = Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Theory]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}""", "'w'")] // 6 floats need 24 bytes
    [InlineData("""{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}}""", "'w'")] // consistent size but past the data
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", "'w'")] // end before begin
    [InlineData("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", "'w'")] // negative dim
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}""", "'w'")] // one offset
    [InlineData("""{"w":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}}""", "C64")] // unsupported dtype
    [InlineData("""{"w":{"dtype":"F32","shape":[2]}}""", "'w'")] // no data_offsets
    [InlineData("""{"w":{"dtype":"F32","shape":["a"],"data_offsets":[0,4]}}""", "'w'")] // non-integer shape
    public void Data_offsets_inconsistent_with_the_shape_are_rejected(string header, string expected)
    {
        string path = Write("offsets.safetensors", header, new byte[24]);

        var ex = Assert.Throws<ModelLoadException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains(expected, ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Fact]
    public void ReadContiguous_reports_a_short_stream_as_a_truncated_tensor()
    {
        using var stream = new MemoryStream(new byte[10]);
        var ex = Assert.Throws<ModelLoadException>(() => ScalarTypes.ReadContiguous(stream, torch.ScalarType.Float32, [4], "some/file", "w"));
        Assert.Contains("some/file", ex.Message);
        Assert.Contains("'w'", ex.Message);
        Assert.Contains("truncated", ex.Message);
    }
}
