using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>Upsample2D(channels, use_conv=True)</c>: nearest-neighbour x2 upsampling followed by a 3x3
/// convolution (<c>conv</c>, padding 1).
/// </summary>
public sealed class Upsample2D : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly long _channels;

    public Upsample2D(long channels, long? outChannels = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Upsample2D))
    {
        _channels = channels;
        conv = nn.Conv2d(channels, outChannels ?? channels, kernel_size: 3, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        if (input.shape[1] != _channels)
        {
            throw new ArgumentException($"Upsample2D expects {_channels} channels, got {input.shape[1]}.", nameof(input));
        }

        using Tensor upsampled = nn.functional.interpolate(input, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
        return conv.call(upsampled);
    }
}
