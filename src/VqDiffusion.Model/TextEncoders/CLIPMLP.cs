using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>transformers <c>CLIPMLP</c>: <c>fc2(act(fc1(x)))</c> with <c>hidden_act</c> (CLIP: <c>quick_gelu</c>).</summary>
public sealed class CLIPMLP : nn.Module<Tensor, Tensor>
{
    /// <summary>The <c>hidden_act</c> values this port implements.</summary>
    public static readonly IReadOnlyList<string> SupportedActivations = ["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

    private readonly Linear fc1;
    private readonly Linear fc2;
    private readonly string hiddenAct;

    public CLIPMLP(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPMLP))
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!SupportedActivations.Contains(config.HiddenAct))
        {
            throw new ModelLoadException(
                $"text encoder config: hidden_act '{config.HiddenAct}' is not supported (supported: {string.Join(", ", SupportedActivations)}).");
        }

        hiddenAct = config.HiddenAct;
        fc1 = nn.Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, device: device, dtype: dtype);
        fc2 = nn.Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        Tensor h = fc1.forward(hiddenStates);
        h = hiddenAct switch
        {
            // QuickGELUActivation: x * sigmoid(1.702 * x)
            "quick_gelu" => h * (h * 1.702).sigmoid(),
            "gelu" => nn.functional.gelu(h),
            "gelu_new" or "gelu_pytorch_tanh" => nn.functional.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh),
            "relu" => nn.functional.relu(h),
            _ => throw new InvalidOperationException($"hidden_act '{hiddenAct}'"),
        };
        return fc2.forward(h).MoveToOuterDisposeScope();
    }
}
