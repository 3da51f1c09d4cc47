using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>UNetMidBlock2D</c> as the VQ-VAE uses it (no timestep embedding): <c>resnets.0</c>, then
/// <c>num_layers</c> x (<see cref="AutoencoderAttention"/>, <see cref="ResnetBlock2D"/>). The attentions are left out
/// when <c>add_attention</c> is false (diffusers keeps <c>None</c> placeholders, which hold no weights). The attention
/// GroupNorm uses <c>resnet_groups</c> only for <c>resnet_time_scale_shift = "default"</c>; with <c>"spatial"</c>
/// the attentions use a <see cref="SpatialNorm"/> of <c>temb_channels</c>.
/// </summary>
public sealed class UNetMidBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    // diffusers registers attentions before resnets.
    private readonly ModuleList<AutoencoderAttention> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2D(
        long inChannels,
        long? tembChannels = null,
        int numLayers = 1,
        double resnetEps = 1e-6,
        string resnetTimeScaleShift = "default",
        string resnetActFn = "swish",
        long resnetGroups = 32,
        long? attnGroups = null,
        bool addAttention = true,
        long? attentionHeadDim = null,
        double outputScaleFactor = 1.0,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(UNetMidBlock2D))
    {
        attnGroups ??= resnetTimeScaleShift == "default" ? resnetGroups : null;
        long headDim = attentionHeadDim ?? inChannels;
        bool spatial = resnetTimeScaleShift == "spatial";

        ResnetBlock2D NewResnet() => new(
            inChannels,
            inChannels,
            tembChannels: tembChannels,
            groups: resnetGroups,
            eps: resnetEps,
            nonLinearity: resnetActFn,
            timeEmbeddingNorm: resnetTimeScaleShift,
            outputScaleFactor: outputScaleFactor,
            device: device,
            dtype: dtype);

        attentions = new ModuleList<AutoencoderAttention>();
        resnets = new ModuleList<ResnetBlock2D>(NewResnet());
        for (int i = 0; i < numLayers; i++)
        {
            if (addAttention)
            {
                attentions.Add(new AutoencoderAttention(
                    inChannels,
                    heads: inChannels / headDim,
                    dimHead: headDim,
                    rescaleOutputFactor: outputScaleFactor,
                    eps: resnetEps,
                    normNumGroups: attnGroups,
                    spatialNormDim: spatial ? tembChannels : null,
                    residualConnection: true,
                    bias: true,
                    device: device,
                    dtype: dtype));
            }

            resnets.Add(NewResnet());
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor? temb)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h = resnets[0].call(hiddenStates, temb);
        for (int i = 1; i < resnets.Count; i++)
        {
            if (attentions.Count > 0)
            {
                h = attentions[i - 1].call(h, temb);
            }

            h = resnets[i].call(h, temb);
        }

        return h.MoveToOuterDisposeScope();
    }
}
