using TorchSharp;

namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>A <c>torch.dtype</c> value referenced by a checkpoint (e.g. <c>torch.float16</c>).</summary>
internal sealed record TorchDType(string Name, torch.ScalarType Value)
{
    public override string ToString() => "torch." + Name;
}
