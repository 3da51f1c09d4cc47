using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>UpDecoderBlock2D</c>: <c>num_layers</c> <see cref="ResnetBlock2D"/>s, then (unless it is the last
/// block) an <see cref="Upsample2D"/> in <c>upsamplers.0</c>. <c>temb</c> is the quantized latents for
/// <c>resnet_time_scale_shift = "spatial"</c> and null otherwise.
/// </summary>
public sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Upsample2D>? upsamplers;

    public UpDecoderBlock2D(
        long inChannels,
        long outChannels,
        int numLayers = 1,
        double resnetEps = 1e-6,
        string resnetTimeScaleShift = "default",
        string resnetActFn = "swish",
        long resnetGroups = 32,
        double outputScaleFactor = 1.0,
        bool addUpsample = true,
        long? tembChannels = null,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(UpDecoderBlock2D))
    {
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
        foreach (ResnetBlock2D resnet in resnets)
        {
            h = resnet.call(h, temb);
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
