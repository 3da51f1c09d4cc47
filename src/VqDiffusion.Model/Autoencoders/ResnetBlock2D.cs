using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>ResnetBlock2D</c> as the VQ-VAE uses it (pre-norm, no timestep embedding):
/// <c>x + conv2(dropout(act(norm2(conv1(act(norm1(x)))))))</c>, with a 1x1 <c>conv_shortcut</c> on the residual when
/// the channel count changes, divided by <c>output_scale_factor</c>. With <c>time_embedding_norm = "spatial"</c>
/// (diffusers <c>ResnetBlockCondNorm2D</c>) both norms are <see cref="SpatialNorm"/>s conditioned on the quantized
/// latents passed as <c>temb</c>.
/// </summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    // Field order = the state_dict order of diffusers (norm1, conv1, norm2, conv2, conv_shortcut).
    private readonly nn.Module norm1;
    private readonly Conv2d conv1;
    private readonly nn.Module norm2;
    private readonly Dropout dropout;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;

    private readonly Func<Tensor, Tensor> _nonlinearity;
    private readonly double _outputScaleFactor;

    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels (null: <paramref name="inChannels"/>).</param>
    /// <param name="tembChannels">Channels of the conditioning; only with <c>"spatial"</c> (the timestep projection of UNets is not part of a VQ-VAE).</param>
    /// <param name="groups">GroupNorm groups.</param>
    /// <param name="eps">GroupNorm epsilon.</param>
    /// <param name="nonLinearity">diffusers activation name.</param>
    /// <param name="timeEmbeddingNorm"><c>"default"</c>/<c>"group"</c> (GroupNorm) or <c>"spatial"</c> (SpatialNorm).</param>
    /// <param name="outputScaleFactor">The sum is divided by this.</param>
    /// <param name="dropout">Dropout probability (inference: unused).</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public ResnetBlock2D(
        long inChannels,
        long? outChannels = null,
        long? tembChannels = null,
        long groups = 32,
        double eps = 1e-6,
        string nonLinearity = "swish",
        string timeEmbeddingNorm = "default",
        double outputScaleFactor = 1.0,
        double dropout = 0.0,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(ResnetBlock2D))
    {
        long outCh = outChannels ?? inChannels;
        bool spatial = timeEmbeddingNorm switch
        {
            "default" or "group" => false,
            "spatial" => true,
            _ => throw new ModelLoadException($"ResnetBlock2D: unsupported time_embedding_norm '{timeEmbeddingNorm}' (supported: default, group, spatial)."),
        };
        if (spatial && tembChannels is null)
        {
            throw new ModelLoadException("ResnetBlock2D: time_embedding_norm 'spatial' needs temb_channels (the quantized latent channels).");
        }

        if (!spatial && tembChannels is not null)
        {
            throw new ModelLoadException("ResnetBlock2D: a timestep embedding projection (temb_channels with time_embedding_norm 'default') is not part of a VQ-VAE and is not supported.");
        }

        norm1 = spatial
            ? new SpatialNorm(inChannels, tembChannels!.Value, device, dtype)
            : AutoencoderLayers.GroupNorm(groups, inChannels, eps, device, dtype);
        conv1 = nn.Conv2d(inChannels, outCh, kernel_size: 3, stride: 1, padding: 1, device: device, dtype: dtype);
        norm2 = spatial
            ? new SpatialNorm(outCh, tembChannels!.Value, device, dtype)
            : AutoencoderLayers.GroupNorm(groups, outCh, eps, device, dtype);
        this.dropout = nn.Dropout(dropout);
        conv2 = nn.Conv2d(outCh, outCh, kernel_size: 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (inChannels != outCh)
        {
            conv_shortcut = nn.Conv2d(inChannels, outCh, kernel_size: 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        }

        _nonlinearity = AutoencoderLayers.Activation(nonLinearity);
        _outputScaleFactor = outputScaleFactor;
        RegisterComponents();
    }

    public override Tensor forward(Tensor input, Tensor? temb)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h = Norm(norm1, input, temb);
        h = _nonlinearity(h);
        h = conv1.call(h);
        h = Norm(norm2, h, temb);
        h = _nonlinearity(h);
        h = dropout.call(h);
        h = conv2.call(h);
        Tensor residual = conv_shortcut is null ? input : conv_shortcut.call(input);
        Tensor output = residual + h;
        if (_outputScaleFactor != 1.0)
        {
            output = output / _outputScaleFactor;
        }

        return output.MoveToOuterDisposeScope();
    }

    private static Tensor Norm(nn.Module norm, Tensor x, Tensor? temb) => norm switch
    {
        GroupNorm g => g.call(x),
        SpatialNorm s => s.call(x, temb ?? throw new ArgumentException("ResnetBlock2D with SpatialNorm needs the quantized latents (temb).", nameof(temb))),
        _ => throw new InvalidOperationException($"unexpected norm module {norm.GetType().Name}"),
    };
}
