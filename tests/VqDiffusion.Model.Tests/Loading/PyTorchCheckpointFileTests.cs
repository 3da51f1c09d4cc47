using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text.Json;
using TorchSharp;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;
using Xunit.Abstractions;

namespace VqDiffusion.Model.Tests.Loading;

public sealed class PyTorchCheckpointFileTests : IDisposable
{
    private static readonly string TransformerBin = Path.Combine(Fixtures.TinyModel, "transformer", "diffusion_pytorch_model.bin");
    private static readonly string TransformerSafetensors = Path.Combine(Fixtures.TinyModel, "transformer", "diffusion_pytorch_model.safetensors");

    private static readonly string PickleFixtures = Path.Combine(Fixtures.RepoRoot, "tests", "fixtures", "pytorch-pickle");

    private readonly ITestOutputHelper _output;
    private readonly TempDirectory _temp = new();

    public PyTorchCheckpointFileTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void Fixture_bin_holds_exactly_the_tensors_of_the_safetensors_file()
    {
        using var bin = PyTorchCheckpointFile.Open(TransformerBin);
        using var st = SafeTensorsFile.Open(TransformerSafetensors);

        Assert.Equal(TransformerBin, bin.Path);
        Assert.NotEmpty(bin.Tensors);
        Assert.Equal(st.Tensors.Keys.Order(StringComparer.Ordinal), bin.Tensors.Keys.Order(StringComparer.Ordinal));

        long bytes = 0;
        foreach ((string name, TensorEntry expectedEntry) in st.Tensors)
        {
            TensorEntry actualEntry = bin.Tensors[name];
            Assert.Equal(name, actualEntry.Name);
            Assert.Equal(TransformerBin, actualEntry.File);
            Assert.Equal(expectedEntry.DType, actualEntry.DType);
            Assert.Equal(expectedEntry.Shape, actualEntry.Shape);

            using torch.Tensor expected = expectedEntry.Read();
            using torch.Tensor actual = actualEntry.Read();
            Assert.Equal(torch.CPU.type, actual.device.type);
            Assert.Equal(expectedEntry.DType, actual.dtype);
            Assert.Equal(expectedEntry.Shape, actual.shape);
            Assert.True(actual.is_contiguous(), name);
            Assert.True(expected.bytes.SequenceEqual(actual.bytes), $"{name}: bytes differ between .bin and .safetensors");
            bytes += actual.bytes.Length;
        }

        _output.WriteLine($"{bin.Tensors.Count} tensors, {bytes} bytes, bit-identical to the safetensors file");
    }

    /// <summary>
    /// Checkpoints pickled by CPython's own pickler at protocols 2 to 5 (tests/fixtures/pytorch-pickle/make_fixtures.py):
    /// OrderedDict with _metadata (BUILD), _rebuild_tensor_v2 and _rebuild_parameter, transposed and offset
    /// views, int64 and float16 storages; the protocol-5 file has deflated storages.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Checkpoints_pickled_by_CPython_at_each_protocol_read_back_their_values(int protocol)
    {
        using JsonDocument expected = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(PickleFixtures, "expected.json")));
        using var file = PyTorchCheckpointFile.Open(Path.Combine(PickleFixtures, $"state_dict_p{protocol}.bin"));

        Assert.Equal(expected.RootElement.EnumerateObject().Select(p => p.Name), file.Tensors.Keys);
        foreach (JsonProperty spec in expected.RootElement.EnumerateObject())
        {
            TensorEntry entry = file.Tensors[spec.Name];
            long[] shape = spec.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            Assert.Equal(shape, entry.Shape);
            using torch.Tensor t = entry.Read();
            Assert.Equal(shape, t.shape);
            Assert.True(t.is_contiguous());
            JsonElement values = spec.Value.GetProperty("values");
            switch (spec.Value.GetProperty("dtype").GetString())
            {
                case "float32":
                    Assert.Equal(torch.ScalarType.Float32, t.dtype);
                    Assert.Equal(values.EnumerateArray().Select(e => e.GetSingle()).ToArray(), t.data<float>().ToArray());
                    break;
                case "int64":
                    Assert.Equal(torch.ScalarType.Int64, t.dtype);
                    Assert.Equal(values.EnumerateArray().Select(e => e.GetInt64()).ToArray(), t.data<long>().ToArray());
                    break;
                case "float16":
                    Assert.Equal(torch.ScalarType.Float16, t.dtype);
                    using (torch.Tensor f = t.to(torch.float32))
                    {
                        Assert.Equal(values.EnumerateArray().Select(e => e.GetSingle()).ToArray(), f.data<float>().ToArray());
                    }

                    break;
                default:
                    Assert.Fail($"{spec.Name}: unexpected dtype in expected.json");
                    break;
            }
        }
    }

    [Fact]
    public void Read_returns_a_new_tensor_each_time()
    {
        using var bin = PyTorchCheckpointFile.Open(TransformerBin);
        TensorEntry entry = bin.Tensors.Values.First(e => e.DType == torch.ScalarType.Float32 && e.NumElements > 1);
        using torch.Tensor a = entry.Read();
        using torch.Tensor b = entry.Read();
        float original = b.flatten()[0].item<float>();
        a.fill_(12345f);
        Assert.Equal(original, b.flatten()[0].item<float>());
    }

    [Fact]
    public void Strided_views_storage_offsets_scalars_and_shared_storages_are_read_correctly()
    {
        // One float storage of 20 values shared by five tensors, an int64 storage wrapped in a Parameter,
        // and a float16 storage.
        float[] floats = Enumerable.Range(0, 20).Select(i => (i * 0.5f) + 1f).ToArray();
        long[] longs = [100, 101, 102, 103, 104, 105];
        Half[] halves = [(Half)1.5f, (Half)(-2f), (Half)0.25f];

        var p = new PickleBuilder().Proto(2).OrderedDict().Mark();
        p.Str("transposed").Tensor("FloatStorage", "0", 20, offset: 2, size: [3, 4], stride: [1, 3]);
        p.Str("contiguous").Tensor("FloatStorage", "0", 20, offset: 5, size: [2, 3], stride: [3, 1]);
        p.Str("scalar").Tensor("FloatStorage", "0", 20, offset: 19, size: [], stride: []);
        p.Str("expanded").Tensor("FloatStorage", "0", 20, offset: 7, size: [2, 3], stride: [0, 1]);
        p.Str("empty").Tensor("FloatStorage", "0", 20, offset: 0, size: [0, 4], stride: [4, 1]);
        p.Str("param").Global("torch._utils", "_rebuild_parameter").Mark()
            .Tensor("LongStorage", "1", 6, offset: 1, size: [3], stride: [2]).False().OrderedDict()
            .Tuple().Reduce();
        p.Str("half").Tensor("HalfStorage", "2", 3, offset: 0, size: [3], stride: [1]);
        byte[] pkl = p.SetItems().Stop().ToArray();

        string path = _temp.File("strided.bin");
        CheckpointZip.Write(path, pkl, new Dictionary<string, byte[]>
        {
            ["0"] = MemoryMarshal.AsBytes(floats.AsSpan()).ToArray(),
            ["1"] = MemoryMarshal.AsBytes(longs.AsSpan()).ToArray(),
            ["2"] = MemoryMarshal.AsBytes(halves.AsSpan()).ToArray(),
        }, top: "my_model");

        using var file = PyTorchCheckpointFile.Open(path);
        Assert.Equal(["transposed", "contiguous", "scalar", "expanded", "empty", "param", "half"], file.Tensors.Keys.ToArray());

        using (torch.Tensor t = file.Tensors["transposed"].Read())
        {
            Assert.Equal([3L, 4L], t.shape);
            Assert.True(t.is_contiguous());
            var expected = new float[12];
            for (int i = 0; i < 3; i++)
            {
                for (int j = 0; j < 4; j++)
                {
                    expected[(i * 4) + j] = floats[2 + i + (3 * j)];
                }
            }

            Assert.Equal(expected, t.data<float>().ToArray());
        }

        using (torch.Tensor t = file.Tensors["contiguous"].Read())
        {
            Assert.Equal([2L, 3L], t.shape);
            Assert.Equal(floats[5..11], t.data<float>().ToArray());
        }

        using (torch.Tensor t = file.Tensors["scalar"].Read())
        {
            Assert.Empty(t.shape);
            Assert.Equal(floats[19], t.item<float>());
        }

        using (torch.Tensor t = file.Tensors["expanded"].Read())
        {
            Assert.Equal([2L, 3L], t.shape);
            Assert.Equal(new[] { floats[7], floats[8], floats[9], floats[7], floats[8], floats[9] }, t.data<float>().ToArray());
            Assert.True(t.is_contiguous());
        }

        using (torch.Tensor t = file.Tensors["empty"].Read())
        {
            Assert.Equal([0L, 4L], t.shape);
            Assert.Equal(torch.ScalarType.Float32, t.dtype);
        }

        TensorEntry param = file.Tensors["param"];
        Assert.Equal(torch.ScalarType.Int64, param.DType);
        Assert.Equal([3L], param.Shape);
        using (torch.Tensor t = param.Read())
        {
            Assert.Equal(new long[] { 101, 103, 105 }, t.data<long>().ToArray());
        }

        using (torch.Tensor t = file.Tensors["half"].Read())
        {
            Assert.Equal(torch.ScalarType.Float16, t.dtype);
            using torch.Tensor f = t.to(torch.float32);
            Assert.Equal(new[] { 1.5f, -2f, 0.25f }, f.data<float>().ToArray());
        }
    }

    [Fact]
    public void Protocol_4_stack_global_and_memoize_are_supported()
    {
        float[] floats = [3f, 4f];
        var p = new PickleBuilder().Proto(4)
            .StackGlobal("collections", "OrderedDict").Raw(0x94).EmptyTuple().Reduce().Raw(0x94)
            .Str("w").Raw(0x94)
            .StackGlobal("torch._utils", "_rebuild_tensor_v2").Mark()
            .Mark().Str("storage").StackGlobal("torch", "FloatStorage").Str("0").Str("cpu").Int(2).Tuple().BinPersId()
            .Int(0).IntTuple(2).IntTuple(1).False().Raw((byte)'h', 0).EmptyTuple().Reduce()
            .Tuple().Reduce()
            .SetItem().Stop();
        string path = _temp.File("p4.bin");
        CheckpointZip.Write(path, p.ToArray(), new Dictionary<string, byte[]> { ["0"] = MemoryMarshal.AsBytes(floats.AsSpan()).ToArray() });

        using var file = PyTorchCheckpointFile.Open(path);
        using torch.Tensor w = file.Tensors["w"].Read();
        Assert.Equal(floats, w.data<float>().ToArray());
    }

    [Fact]
    public void Truncated_checkpoint_is_rejected_with_the_path()
    {
        string path = _temp.File("half.bin");
        byte[] all = File.ReadAllBytes(TransformerBin);
        File.WriteAllBytes(path, all[..(all.Length / 2)]);

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Fact]
    public void Random_bytes_are_rejected_with_the_path()
    {
        string path = _temp.File("random.bin");
        var bytes = new byte[4096];
        new Random(1234).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Fact]
    public void Zip_signature_followed_by_garbage_is_rejected_with_the_path()
    {
        string path = _temp.File("garbage.bin");
        var bytes = new byte[2048];
        new Random(99).NextBytes(bytes);
        "PK\u0003\u0004"u8.CopyTo(bytes);
        File.WriteAllBytes(path, bytes);

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
    }

    [Fact]
    public void Missing_file_is_rejected_with_the_path()
    {
        string path = _temp.File("absent.bin");
        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
    }

    public static TheoryData<string, string> ForbiddenGlobals => new()
    {
        // os.system("echo pwned") the classic way (protocol 2, GLOBAL + REDUCE).
        { "global", "posix.system" },
        // builtins.eval via STACK_GLOBAL (protocol 4).
        { "stack_global", "builtins.eval" },
        // A forbidden callable hidden as the backward_hooks argument of a tensor.
        { "inside_tensor", "os.remove" },
        // Callable torch functions other than the rebuild helpers are refused too.
        { "torch_function", "torch.load" },
    };

    [Theory]
    [MemberData(nameof(ForbiddenGlobals))]
    public void Forbidden_globals_are_rejected_naming_the_global(string variant, string global)
    {
        string module = global[..global.LastIndexOf('.')];
        string name = global[(global.LastIndexOf('.') + 1)..];
        var p = new PickleBuilder();
        switch (variant)
        {
            case "global":
            case "torch_function":
                p.Proto(2).Global(module, name).Str("echo pwned").Raw(0x85).Reduce().Stop();
                break;
            case "stack_global":
                p.Proto(4).StackGlobal(module, name).Str("__import__('os').system('echo pwned')").Raw(0x85).Reduce().Stop();
                break;
            default:
                p.Proto(2).OrderedDict().Str("w")
                    .Global("torch._utils", "_rebuild_tensor_v2").Mark()
                    .Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(1).Tuple().BinPersId()
                    .Int(0).IntTuple(1).IntTuple(1).False().Global(module, name).Str("/tmp/x").Raw(0x85).Reduce()
                    .Tuple().Reduce().SetItem().Stop();
                break;
        }

        string path = _temp.File($"evil-{variant}.bin");
        CheckpointZip.Write(path, p.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[4] });

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains($"'{global}'", ex.Message);
        Assert.Contains("not allowed", ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Fact]
    public void Legacy_format_is_rejected_with_advice()
    {
        string path = _temp.File("legacy.bin");
        byte[] magic = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x80, 0x02, 0x4d, 0xe9, 0x03, 0x2e];
        File.WriteAllBytes(path, magic);

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("legacy", ex.Message);
        Assert.Contains("torch >= 1.6", ex.Message);
        Assert.Contains("safetensors", ex.Message);
    }

    [Fact]
    public void Nested_state_dict_is_rejected_with_advice()
    {
        var p = new PickleBuilder().Proto(2).EmptyDict()
            .Str("epoch").Int(3).SetItem()
            .Str("state_dict").OrderedDict().Str("w").Tensor("FloatStorage", "0", 1, 0, [1], [1]).SetItem().SetItem()
            .Stop();
        string path = _temp.File("nested.bin");
        CheckpointZip.Write(path, p.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[4] });

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("'state_dict'", ex.Message);
        Assert.Contains("nested", ex.Message);
        _output.WriteLine(ex.Message);
    }

    [Fact]
    public void Truncated_storage_entry_is_rejected_at_open()
    {
        var p = new PickleBuilder().Proto(2).OrderedDict().Str("w").Tensor("FloatStorage", "0", 10, 0, [10], [1]).SetItem().Stop();
        string path = _temp.File("short-storage.bin");
        CheckpointZip.Write(path, p.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[4 * 7] });

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("'w'", ex.Message);
        Assert.Contains("truncated", ex.Message);
    }

    [Fact]
    public void Missing_storage_entry_is_rejected_at_open()
    {
        var p = new PickleBuilder().Proto(2).OrderedDict().Str("w").Tensor("FloatStorage", "7", 1, 0, [1], [1]).SetItem().Stop();
        string path = _temp.File("no-storage.bin");
        CheckpointZip.Write(path, p.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[4] });

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("archive/data/7", ex.Message);
    }

    [Theory]
    [InlineData(0L, new long[] { 5 }, new long[] { 1 })] // 5 elements from a 4-element storage
    [InlineData(3L, new long[] { 2 }, new long[] { 1 })] // offset pushes past the end
    [InlineData(0L, new long[] { 2, 2 }, new long[] { 3, 1 })] // strides reach element 4
    [InlineData(0L, new long[] { 2 }, new long[] { -1 })] // negative stride
    [InlineData(0L, new long[] { 2, 2 }, new long[] { 1 })] // size/stride rank mismatch
    [InlineData(0L, new long[] { 3037000500, 3037000500 }, new long[] { 3037000500, 1 })] // overflowing extent
    [InlineData(0L, new long[] { 1099511627776, 1099511627776 }, new long[] { 0, 0 })] // in bounds, but 2^80 elements
    public void Tensor_views_outside_their_storage_are_rejected(long offset, long[] size, long[] stride)
    {
        var p = new PickleBuilder().Proto(2).OrderedDict().Str("w").Tensor("FloatStorage", "0", 4, offset, size, stride).SetItem().Stop();
        string path = _temp.File("oob.bin");
        CheckpointZip.Write(path, p.ToArray(), new Dictionary<string, byte[]> { ["0"] = new byte[16] });

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        _output.WriteLine(ex.Message);
    }

    public static TheoryData<string, byte[], string> MalformedPickles => new()
    {
        { "no STOP", new PickleBuilder().Proto(2).EmptyDict().ToArray(), "STOP" },
        { "memo never stored", new PickleBuilder().Proto(2).BinGet(5).Stop().ToArray(), "memo" },
        { "string past the end", new PickleBuilder().Proto(2).Raw((byte)'X', 0xff, 0xff, 0xff, 0x7f, (byte)'a').Stop().ToArray(), "past the end" },
        { "argument past the end", new PickleBuilder().Proto(2).Raw((byte)'J', 1, 2).ToArray(), "ends inside" },
        { "unknown opcode", new PickleBuilder().Proto(2).Raw(0xfe).Stop().ToArray(), "0xfe" },
        { "stack underflow", new PickleBuilder().Proto(2).Reduce().Stop().ToArray(), "underflow" },
        { "SETITEM on a list", new PickleBuilder().Proto(2).Raw((byte)']').Str("a").Int(1).SetItem().Stop().ToArray(), "SETITEM" },
        { "top level is not a dict", new PickleBuilder().Proto(2).None().Stop().ToArray(), "None" },
        { "state_dict value is not a tensor", new PickleBuilder().Proto(2).EmptyDict().Str("w").Int(1).SetItem().Stop().ToArray(), "'w'" },
        { "tuple as a dict key", new PickleBuilder().Proto(2).EmptyDict().EmptyTuple().Int(1).SetItem().Stop().ToArray(), "dict key of type tuple" },
        { "unsupported protocol", new PickleBuilder().Proto(9).EmptyDict().Stop().ToArray(), "protocol 9" },
        { "bad persistent id", new PickleBuilder().Proto(2).Str("x").BinPersId().Stop().ToArray(), "persistent id" },
        { "unsupported storage", new PickleBuilder().Proto(2).Global("torch", "ComplexFloatStorage").Stop().ToArray(), "torch.ComplexFloatStorage" },
        { "calling a storage class", new PickleBuilder().Proto(2).Global("torch", "FloatStorage").EmptyTuple().Reduce().Stop().ToArray(), "not an allowed callable" },
        { "rebuild with wrong arity", new PickleBuilder().Proto(2).Global("torch._utils", "_rebuild_tensor_v2").EmptyTuple().Reduce().Stop().ToArray(), "_rebuild_tensor_v2" },
    };

    [Theory]
    [MemberData(nameof(MalformedPickles))]
    public void Malformed_pickles_are_rejected_naming_the_file(string what, byte[] pickle, string expected)
    {
        string path = _temp.File("malformed.bin");
        CheckpointZip.Write(path, pickle, new Dictionary<string, byte[]>());

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        _output.WriteLine($"{what}: {ex.Message}");
        Assert.Contains(path, ex.Message);
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void Truncated_data_pkl_of_the_fixture_is_rejected()
    {
        byte[] pkl = [];
        var storages = new Dictionary<string, byte[]>();
        using (ZipArchive zip = ZipFile.OpenRead(TransformerBin))
        {
            foreach (ZipArchiveEntry e in zip.Entries)
            {
                using var ms = new MemoryStream();
                using (Stream s = e.Open())
                {
                    s.CopyTo(ms);
                }

                if (e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal))
                {
                    pkl = ms.ToArray();
                }
                else if (e.FullName.Contains("/data/", StringComparison.Ordinal))
                {
                    storages[e.FullName[(e.FullName.LastIndexOf('/') + 1)..]] = ms.ToArray();
                }
            }
        }

        Assert.NotEmpty(pkl);
        string path = _temp.File("cut-pickle.bin");
        CheckpointZip.Write(path, pkl[..(pkl.Length / 2)], storages);

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("data.pkl", ex.Message);
        _output.WriteLine(ex.Message);

        // The same entries with the whole pickle open fine: the failure above is the cut alone.
        string whole = _temp.File("whole-pickle.bin");
        CheckpointZip.Write(whole, pkl, storages);
        using var rebuilt = PyTorchCheckpointFile.Open(whole);
        using var original = PyTorchCheckpointFile.Open(TransformerBin);
        Assert.Equal(original.Tensors.Keys, rebuilt.Tensors.Keys);
    }

    [Fact]
    public void Big_endian_checkpoints_are_rejected()
    {
        var p = new PickleBuilder().Proto(2).EmptyDict().Stop();
        string path = _temp.File("big.bin");
        using (var stream = new FileStream(path, FileMode.Create))
        using (var zip = new ZipArchive(stream, ZipArchiveMode.Create))
        {
            using (Stream s = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open())
            {
                s.Write(p.ToArray());
            }

            using (Stream s = zip.CreateEntry("archive/byteorder", CompressionLevel.NoCompression).Open())
            {
                s.Write("big"u8);
            }
        }

        var ex = Assert.Throws<ModelLoadException>(() => PyTorchCheckpointFile.Open(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("'big'", ex.Message);
    }

    [Fact]
    public void WeightsLocator_opens_bin_files_with_the_checkpoint_reader()
    {
        using IWeightsFile file = WeightsLocator.Open(TransformerBin);
        Assert.IsType<PyTorchCheckpointFile>(file);
        Assert.NotEmpty(file.Tensors);
    }
}
