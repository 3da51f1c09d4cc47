using TorchSharp;

namespace VqDiffusion.Model.Loading;

internal static class ScalarTypes
{
    public static int ElementSize(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Bool or torch.ScalarType.Byte or torch.ScalarType.Int8 => 1,
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 or torch.ScalarType.Int16 => 2,
        torch.ScalarType.Float32 or torch.ScalarType.Int32 => 4,
        torch.ScalarType.Float64 or torch.ScalarType.Int64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unsupported dtype"),
    };

    public static string Name(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float32 => "float32",
        torch.ScalarType.Float16 => "float16",
        torch.ScalarType.BFloat16 => "bfloat16",
        torch.ScalarType.Float64 => "float64",
        torch.ScalarType.Int64 => "int64",
        torch.ScalarType.Int32 => "int32",
        torch.ScalarType.Int16 => "int16",
        torch.ScalarType.Int8 => "int8",
        torch.ScalarType.Byte => "uint8",
        torch.ScalarType.Bool => "bool",
        _ => dtype.ToString(),
    };

    public static bool IsFloating(torch.ScalarType dtype) =>
        dtype is torch.ScalarType.Float16 or torch.ScalarType.BFloat16 or torch.ScalarType.Float32 or torch.ScalarType.Float64;

    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>
    /// Allocates a CPU tensor of <paramref name="dtype"/> and <paramref name="shape"/> and fills its
    /// bytes from <paramref name="stream"/> (little-endian, contiguous, as both file formats store them).
    /// </summary>
    public static torch.Tensor ReadContiguous(Stream stream, torch.ScalarType dtype, long[] shape, string file, string name)
    {
        var tensor = torch.empty(shape, dtype, torch.CPU);
        try
        {
            tensor.ReadBytesFromStream(stream, bufferSize: 1 << 20);
            return tensor;
        }
        catch (EndOfStreamException ex)
        {
            long bytes = tensor.numel() * ElementSize(dtype);
            tensor.Dispose();
            throw new ModelLoadException(
                $"{file}: tensor '{name}' is truncated (the file ends before its {bytes} bytes). The weights file is incomplete or corrupt.", ex);
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }
}
