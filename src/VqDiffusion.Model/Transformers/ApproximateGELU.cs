using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>ApproximateGELU</c> (activation <c>"geglu-approximate"</c>): a projection followed by the sigmoid
/// approximation of GELU, <c>x·sigmoid(1.702·x)</c>. Despite the config name there is no gating.
/// </summary>
public sealed class ApproximateGELU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;

    public ApproximateGELU(int dimIn, int dimOut, bool bias = true, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ApproximateGELU))
    {
        proj = nn.Linear(dimIn, dimOut, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var projected = proj.forward(x);
        using var scaled = projected * 1.702;
        using var gate = scaled.sigmoid();
        return projected * gate;
    }
}
