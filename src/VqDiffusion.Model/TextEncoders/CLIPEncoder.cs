using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using static TorchSharp.torch;

namespace VqDiffusion.Model.TextEncoders;

/// <summary>transformers <c>CLIPEncoder</c>: <c>num_hidden_layers</c> <see cref="CLIPEncoderLayer"/>s.</summary>
public sealed class CLIPEncoder : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<CLIPEncoderLayer> layers;

    public CLIPEncoder(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPEncoder))
    {
        ArgumentNullException.ThrowIfNull(config);
        layers = new ModuleList<CLIPEncoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            layers.Add(new CLIPEncoderLayer(config, device, dtype));
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor inputsEmbeds, Tensor? attentionBias)
    {
        using var scope = NewDisposeScope();
        Tensor h = inputsEmbeds;
        foreach (CLIPEncoderLayer layer in layers)
        {
            h = layer.forward(h, attentionBias);
        }

        return h.MoveToOuterDisposeScope();
    }
}
