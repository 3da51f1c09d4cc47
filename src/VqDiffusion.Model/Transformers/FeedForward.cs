using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>FeedForward</c>: <c>net = [activation (with its input projection), Dropout, Linear]</c>, so the
/// checkpoint keys are <c>net.0.proj.*</c> and <c>net.2.*</c>. The hidden width is <c>dim·mult</c>.
/// </summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    /// <summary>The <c>activation_fn</c> values this port implements.</summary>
    public static readonly IReadOnlyList<string> SupportedActivations = ["geglu-approximate", "geglu", "gelu", "gelu-approximate"];

    private readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    public FeedForward(
        int dim,
        int? dimOut = null,
        int mult = 4,
        double dropout = 0.0,
        string activationFn = "geglu",
        bool finalDropout = false,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(FeedForward))
    {
        int innerDim = dim * mult;
        int outDim = dimOut ?? dim;
        nn.Module<Tensor, Tensor> activation = activationFn switch
        {
            "gelu" => new GELU(dim, innerDim, tanhApproximation: false, device: device, dtype: dtype),
            "gelu-approximate" => new GELU(dim, innerDim, tanhApproximation: true, device: device, dtype: dtype),
            "geglu" => new GEGLU(dim, innerDim, device: device, dtype: dtype),
            "geglu-approximate" => new ApproximateGELU(dim, innerDim, device: device, dtype: dtype),
            _ => throw new ModelLoadException(
                $"activation_fn '{activationFn}' is not supported (supported: {string.Join(", ", SupportedActivations)})."),
        };

        net = new ModuleList<nn.Module<Tensor, Tensor>>(
            activation,
            nn.Dropout(dropout),
            nn.Linear(innerDim, outDim, hasBias: true, device: device, dtype: dtype));
        if (finalDropout)
        {
            net.Add(nn.Dropout(dropout));
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        Tensor current = hiddenStates;
        foreach (var module in net)
        {
            current = module.forward(current);
        }

        return current.MoveToOuterDisposeScope();
    }
}
