using TorchSharp;

namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// A tensor described by <c>_rebuild_tensor_v2</c>/<c>_v3</c>: a strided view of <paramref name="Storage"/>.
/// <paramref name="StorageOffset"/> and <paramref name="Stride"/> count elements of <paramref name="DType"/>.
/// </summary>
internal sealed record TorchTensorRef(TorchStorageRef Storage, torch.ScalarType DType, long StorageOffset, long[] Shape, long[] Stride)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => checked(a * b));

    /// <summary>True when the strides are the row-major ones of <see cref="Shape"/> (size-1 dims ignored).</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int i = Shape.Length - 1; i >= 0; i--)
            {
                if (Shape[i] != 1 && Stride[i] != expected)
                {
                    return false;
                }

                expected *= Shape[i];
            }

            return true;
        }
    }

    /// <summary>
    /// Number of storage elements from the first to the last element of the view, inclusive
    /// (0 for an empty tensor, 1 for a scalar). Throws <see cref="OverflowException"/> on absurd strides.
    /// </summary>
    public long Extent()
    {
        if (Shape.Any(d => d == 0))
        {
            return 0;
        }

        long last = 0;
        for (int i = 0; i < Shape.Length; i++)
        {
            last = checked(last + ((Shape[i] - 1) * Stride[i]));
        }

        return checked(last + 1);
    }

    public override string ToString() => "tensor";
}
