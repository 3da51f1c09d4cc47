using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>Encoder</c> (models/autoencoders/vae.py): <c>conv_in</c> → down blocks (resnet eps 1e-6,
/// downsample padding 0, one attention head of the block's width) → <see cref="UNetMidBlock2D"/> →
/// <c>conv_norm_out</c> (GroupNorm, eps 1e-6) → SiLU → <c>conv_out</c> (2x <c>out_channels</c> when <c>double_z</c>).
/// </summary>
public sealed class Encoder : nn.Module<Tensor, Tensor>
{
    // Field order = diffusers' state_dict order.
    private readonly Conv2d conv_in;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> down_blocks;
    private readonly UNetMidBlock2D mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    public Encoder(
        long inChannels,
        long outChannels,
        IReadOnlyList<string> downBlockTypes,
        IReadOnlyList<int> blockOutChannels,
        int layersPerBlock = 2,
        long normNumGroups = 32,
        string actFn = "silu",
        bool doubleZ = true,
        bool midBlockAddAttention = true,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(Encoder))
    {
        if (downBlockTypes.Count != blockOutChannels.Count || blockOutChannels.Count == 0)
        {
            throw new ModelLoadException($"Encoder: down_block_types has {downBlockTypes.Count} entries, block_out_channels {blockOutChannels.Count}; they must have the same, non-zero length.");
        }

        conv_in = nn.Conv2d(inChannels, blockOutChannels[0], kernel_size: 3, stride: 1, padding: 1, device: device, dtype: dtype);

        down_blocks = new ModuleList<nn.Module<Tensor, Tensor>>();
        long outputChannel = blockOutChannels[0];
        for (int i = 0; i < downBlockTypes.Count; i++)
        {
            long inputChannel = outputChannel;
            outputChannel = blockOutChannels[i];
            bool isFinalBlock = i == blockOutChannels.Count - 1;
            down_blocks.Add(downBlockTypes[i] switch
            {
                "DownEncoderBlock2D" => new DownEncoderBlock2D(
                    inputChannel,
                    outputChannel,
                    numLayers: layersPerBlock,
                    resnetEps: 1e-6,
                    resnetActFn: actFn,
                    resnetGroups: normNumGroups,
                    addDownsample: !isFinalBlock,
                    downsamplePadding: 0,
                    device: device,
                    dtype: dtype),
                "AttnDownEncoderBlock2D" => new AttnDownEncoderBlock2D(
                    inputChannel,
                    outputChannel,
                    numLayers: layersPerBlock,
                    resnetEps: 1e-6,
                    resnetActFn: actFn,
                    resnetGroups: normNumGroups,
                    attentionHeadDim: outputChannel,
                    addDownsample: !isFinalBlock,
                    downsamplePadding: 0,
                    device: device,
                    dtype: dtype),
                string other => throw new ModelLoadException(
                    $"Encoder: unsupported down block type '{other}' (supported: DownEncoderBlock2D, AttnDownEncoderBlock2D)."),
            });
        }

        long last = blockOutChannels[^1];
        mid_block = new UNetMidBlock2D(
            last,
            tembChannels: null,
            resnetEps: 1e-6,
            resnetTimeScaleShift: "default",
            resnetActFn: actFn,
            resnetGroups: normNumGroups,
            addAttention: midBlockAddAttention,
            attentionHeadDim: last,
            outputScaleFactor: 1,
            device: device,
            dtype: dtype);

        conv_norm_out = AutoencoderLayers.GroupNorm(normNumGroups, last, 1e-6, device, dtype);
        conv_out = nn.Conv2d(last, doubleZ ? 2 * outChannels : outChannels, kernel_size: 3, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h = conv_in.call(sample);
        foreach (var block in down_blocks)
        {
            h = block.call(h);
        }

        h = mid_block.call(h, null);
        h = conv_norm_out.call(h);
        h = nn.functional.silu(h);
        h = conv_out.call(h);
        return h.MoveToOuterDisposeScope();
    }
}
