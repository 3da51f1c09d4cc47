using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>AttnDownEncoderBlock2D</c>: <c>num_layers</c> pairs of <see cref="ResnetBlock2D"/> and
/// <see cref="AutoencoderAttention"/> (one head of <c>attention_head_dim</c> channels), then (unless it is the last
/// block) a <see cref="Downsample2D"/>.
/// </summary>
public sealed class AttnDownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    // diffusers registers attentions before resnets.
    private readonly ModuleList<AutoencoderAttention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;

    public AttnDownEncoderBlock2D(
        long inChannels,
        long outChannels,
        int numLayers = 1,
        double resnetEps = 1e-6,
        string resnetActFn = "swish",
        long resnetGroups = 32,
        long? attentionHeadDim = null,
        double outputScaleFactor = 1.0,
        bool addDownsample = true,
        long downsamplePadding = 1,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(AttnDownEncoderBlock2D))
    {
        long headDim = attentionHeadDim ?? outChannels;
        attentions = new ModuleList<AutoencoderAttention>();
        resnets = new ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
        {
            resnets.Add(new ResnetBlock2D(
                i == 0 ? inChannels : outChannels,
                outChannels,
                groups: resnetGroups,
                eps: resnetEps,
                nonLinearity: resnetActFn,
                outputScaleFactor: outputScaleFactor,
                device: device,
                dtype: dtype));
            attentions.Add(new AutoencoderAttention(
                outChannels,
                heads: outChannels / headDim,
                dimHead: headDim,
                rescaleOutputFactor: outputScaleFactor,
                eps: resnetEps,
                normNumGroups: resnetGroups,
                residualConnection: true,
                bias: true,
                device: device,
                dtype: dtype));
        }

        if (addDownsample)
        {
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(outChannels, outChannels, downsamplePadding, device, dtype));
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            h = resnets[i].call(h, null);
            h = attentions[i].call(h, null);
        }

        if (downsamplers is not null)
        {
            foreach (Downsample2D downsampler in downsamplers)
            {
                h = downsampler.call(h);
            }
        }

        return (ReferenceEquals(h, hiddenStates) ? h.alias() : h).MoveToOuterDisposeScope();
    }
}
