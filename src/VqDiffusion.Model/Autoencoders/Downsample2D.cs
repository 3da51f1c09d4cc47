using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>Downsample2D(channels, use_conv=True, padding, name="op")</c>: a 3x3 stride-2 convolution
/// (<c>conv</c>). With <c>padding = 0</c> (the VQ-VAE encoder) the input is first padded asymmetrically by one
/// zero column on the right and one zero row at the bottom, <c>F.pad(x, (0, 1, 0, 1))</c>.
/// </summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly long _channels;
    private readonly long _padding;

    public Downsample2D(long channels, long? outChannels = null, long padding = 1, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Downsample2D))
    {
        _channels = channels;
        _padding = padding;
        conv = nn.Conv2d(channels, outChannels ?? channels, kernel_size: 3, stride: 2, padding: padding, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        if (input.shape[1] != _channels)
        {
            throw new ArgumentException($"Downsample2D expects {_channels} channels, got {input.shape[1]}.", nameof(input));
        }

        if (_padding != 0)
        {
            return conv.call(input);
        }

        using Tensor padded = nn.functional.pad(input, (0L, 1L, 0L, 1L), PaddingModes.Constant, 0.0);
        return conv.call(padded);
    }
}
