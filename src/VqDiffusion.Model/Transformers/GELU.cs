using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>GELU</c> (activations <c>"gelu"</c> and <c>"gelu-approximate"</c>): a projection followed by GELU,
/// exact (<c>approximate="none"</c>) or with the tanh approximation.
/// </summary>
public sealed class GELU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;
    private readonly bool tanhApproximation;

    public GELU(int dimIn, int dimOut, bool tanhApproximation = false, bool bias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GELU))
    {
        this.tanhApproximation = tanhApproximation;
        proj = nn.Linear(dimIn, dimOut, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var projected = proj.forward(x);
        return tanhApproximation
            ? nn.functional.gelu(projected, TorchSharp.Modules.GELU.Approximate.tanh)
            : nn.functional.gelu(projected);
    }
}
