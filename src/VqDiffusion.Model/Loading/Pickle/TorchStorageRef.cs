using TorchSharp;

namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// A storage named by the persistent id <c>('storage', storage_type, key, location, numel)</c>: its bytes
/// are the zip entry <c>data/&lt;key&gt;</c>, <paramref name="Numel"/> elements of <paramref name="DType"/>.
/// </summary>
internal sealed record TorchStorageRef(string Key, torch.ScalarType DType, long Numel, string Location)
{
    public long ByteLength => Numel * ScalarTypes.ElementSize(DType);

    public override string ToString() => $"storage '{Key}'";
}
