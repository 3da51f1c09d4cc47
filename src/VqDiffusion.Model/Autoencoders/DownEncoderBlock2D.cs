using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>DownEncoderBlock2D</c>: <c>num_layers</c> <see cref="ResnetBlock2D"/>s, then (unless it is the last
/// block) a <see cref="Downsample2D"/> in <c>downsamplers.0</c>.
/// </summary>
public sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;

    public DownEncoderBlock2D(
        long inChannels,
        long outChannels,
        int numLayers = 1,
        double resnetEps = 1e-6,
        string resnetActFn = "swish",
        long resnetGroups = 32,
        double outputScaleFactor = 1.0,
        bool addDownsample = true,
        long downsamplePadding = 1,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(DownEncoderBlock2D))
    {
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
        foreach (ResnetBlock2D resnet in resnets)
        {
            h = resnet.call(h, null);
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
