using TorchSharp;

namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// A storage class referenced by a checkpoint (<c>torch.FloatStorage</c>, …, or <c>torch.UntypedStorage</c>,
/// whose elements are bytes).
/// </summary>
internal sealed record TorchStorageType(string Name, torch.ScalarType DType)
{
    public override string ToString() => "torch." + Name;
}
