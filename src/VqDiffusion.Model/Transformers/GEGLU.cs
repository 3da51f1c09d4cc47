using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>GEGLU</c> (activation <c>"geglu"</c>): one projection to twice the width, split into
/// <c>hidden, gate</c> along the last dimension, output <c>hidden·gelu(gate)</c>.
/// </summary>
public sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;

    public GEGLU(int dimIn, int dimOut, bool bias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GEGLU))
    {
        proj = nn.Linear(dimIn, dimOut * 2, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor[] parts = proj.forward(x).chunk(2, -1);
        Tensor result = parts[0] * nn.functional.gelu(parts[1]);
        return result.MoveToOuterDisposeScope();
    }
}
