using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>AttnUpDecoderBlock2D</c>: <c>num_layers</c> pairs of <see cref="ResnetBlock2D"/> and
/// <see cref="AutoencoderAttention"/>, then (unless it is the last block) an <see cref="Upsample2D"/>. With
/// <c>resnet_time_scale_shift = "spatial"</c> the attentions use a <see cref="SpatialNorm"/> instead of a GroupNorm.
/// </summary>
public sealed class AttnUpDecoderBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    // diffusers registers attentions before resnets.
    private readonly ModuleList<AutoencoderAttention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Upsample2D>? upsamplers;

    public AttnUpDecoderBlock2D(
        long inChannels,
        long outChannels,
        int numLayers = 1,
        double resnetEps = 1e-6,
        string resnetTimeScaleShift = "default",
        string resnetActFn = "swish",
        long resnetGroups = 32,
        long? attentionHeadDim = null,
        double outputScaleFactor = 1.0,
        bool addUpsample = true,
        long? tembChannels = null,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(AttnUpDecoderBlock2D))
    {
        long headDim = attentionHeadDim ?? outChannels;
        bool spatial = resnetTimeScaleShift == "spatial";
        attentions = new ModuleList<AutoencoderAttention>();
        resnets = new ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
        {
            resnets.Add(new ResnetBlock2D(
                i == 0 ? inChannels : outChannels,
                outChannels,
                tembChannels: tembChannels,
                groups: resnetGroups,
                eps: resnetEps,
                nonLinearity: resnetActFn,
                timeEmbeddingNorm: resnetTimeScaleShift,
                outputScaleFactor: outputScaleFactor,
                device: device,
                dtype: dtype));
            attentions.Add(new AutoencoderAttention(
                outChannels,
                heads: outChannels / headDim,
                dimHead: headDim,
                rescaleOutputFactor: outputScaleFactor,
                eps: resnetEps,
                normNumGroups: spatial ? null : resnetGroups,
                spatialNormDim: spatial ? tembChannels : null,
                residualConnection: true,
                bias: true,
                device: device,
                dtype: dtype));
        }

        if (addUpsample)
        {
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(outChannels, outChannels, device, dtype));
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor? temb)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            h = resnets[i].call(h, temb);
            h = attentions[i].call(h, temb);
        }

        if (upsamplers is not null)
        {
            foreach (Upsample2D upsampler in upsamplers)
            {
                h = upsampler.call(h);
            }
        }

        return (ReferenceEquals(h, hiddenStates) ? h.alias() : h).MoveToOuterDisposeScope();
    }
}
