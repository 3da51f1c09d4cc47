using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>Small factories shared by the autoencoder modules (diffusers' <c>get_activation</c>, GroupNorm init).</summary>
internal static class AutoencoderLayers
{
    /// <summary>
    /// <c>nn.GroupNorm(num_groups, num_channels, eps, affine=True)</c> created on <paramref name="device"/> /
    /// <paramref name="dtype"/>. TorchSharp leaves the affine parameters uninitialised; PyTorch starts them at
    /// weight = 1, bias = 0, which is done here (skipped on the meta device, which holds no data).
    /// </summary>
    public static GroupNorm GroupNorm(long numGroups, long numChannels, double eps, Device? device, ScalarType? dtype)
    {
        if (numGroups <= 0 || numChannels % numGroups != 0)
        {
            throw new ModelLoadException($"GroupNorm: num_channels {numChannels} is not divisible by num_groups {numGroups}.");
        }

        GroupNorm norm = nn.GroupNorm(numGroups, numChannels, eps, affine: true, device: device, dtype: dtype);
        if (norm.weight.device_type != DeviceType.META)
        {
            using var noGrad = torch.no_grad();
            norm.weight.fill_(1.0);
            norm.bias!.zero_();
        }

        return norm;
    }

    /// <summary>diffusers <c>get_activation</c>: the activation functions a VQModel config may name.</summary>
    public static Func<Tensor, Tensor> Activation(string name) => name switch
    {
        "silu" or "swish" => x => nn.functional.silu(x),
        "mish" => x => nn.functional.mish(x),
        "gelu" => x => nn.functional.gelu(x),
        "relu" => x => nn.functional.relu(x),
        _ => throw new ModelLoadException($"unsupported act_fn '{name}' (supported: silu, swish, mish, gelu, relu)."),
    };
}
