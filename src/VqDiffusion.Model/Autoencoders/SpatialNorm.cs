using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>SpatialNorm</c> (MoVQ, https://arxiv.org/abs/2209.09002): GroupNorm(32 groups, eps 1e-6) of the
/// features, modulated by 1x1 convolutions of the quantized latents resized (nearest) to the feature size:
/// <c>norm(f) * conv_y(zq) + conv_b(zq)</c>. Used by a VQModel with <c>norm_type = "spatial"</c>.
/// </summary>
public sealed class SpatialNorm : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly GroupNorm norm_layer;
    private readonly Conv2d conv_y;
    private readonly Conv2d conv_b;

    public SpatialNorm(long fChannels, long zqChannels, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SpatialNorm))
    {
        norm_layer = AutoencoderLayers.GroupNorm(32, fChannels, 1e-6, device, dtype);
        conv_y = nn.Conv2d(zqChannels, fChannels, kernel_size: 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        conv_b = nn.Conv2d(zqChannels, fChannels, kernel_size: 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="f">Features [B, C, H, W].</param>
    /// <param name="zq">Quantized latents [B, zq_channels, h, w].</param>
    public override Tensor forward(Tensor f, Tensor zq)
    {
        using var scope = torch.NewDisposeScope();
        Tensor resized = nn.functional.interpolate(zq, size: [f.shape[^2], f.shape[^1]], mode: InterpolationMode.Nearest);
        Tensor normed = norm_layer.call(f);
        Tensor result = normed * conv_y.call(resized) + conv_b.call(resized);
        return result.MoveToOuterDisposeScope();
    }
}
