using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>Decoder</c> (models/autoencoders/vae.py): <c>conv_in</c> → <see cref="UNetMidBlock2D"/> → up blocks
/// (<c>layers_per_block + 1</c> resnets each, reversed <c>block_out_channels</c>) → <c>conv_norm_out</c> → SiLU →
/// <c>conv_out</c>. <c>norm_type = "group"</c> uses GroupNorms (eps 1e-6); <c>"spatial"</c> (MoVQ) uses
/// <see cref="SpatialNorm"/>s conditioned on the quantized latents passed as <c>latent_embeds</c>
/// (<c>temb_channels = in_channels</c>).
/// </summary>
public sealed class Decoder : nn.Module<Tensor, Tensor?, Tensor>
{
    // Field order = diffusers' state_dict order (conv_in, up_blocks, mid_block, conv_norm_out, conv_out).
    private readonly Conv2d conv_in;
    private readonly ModuleList<nn.Module<Tensor, Tensor?, Tensor>> up_blocks;
    private readonly UNetMidBlock2D mid_block;
    private readonly nn.Module conv_norm_out;
    private readonly Conv2d conv_out;

    public Decoder(
        long inChannels,
        long outChannels,
        IReadOnlyList<string> upBlockTypes,
        IReadOnlyList<int> blockOutChannels,
        int layersPerBlock = 2,
        long normNumGroups = 32,
        string actFn = "silu",
        string normType = "group",
        bool midBlockAddAttention = true,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(Decoder))
    {
        if (upBlockTypes.Count != blockOutChannels.Count || blockOutChannels.Count == 0)
        {
            throw new ModelLoadException($"Decoder: up_block_types has {upBlockTypes.Count} entries, block_out_channels {blockOutChannels.Count}; they must have the same, non-zero length.");
        }

        bool spatial = normType switch
        {
            "group" => false,
            "spatial" => true,
            _ => throw new ModelLoadException($"Decoder: unsupported norm_type '{normType}' (supported: group, spatial)."),
        };
        long? tembChannels = spatial ? inChannels : null;
        long last = blockOutChannels[^1];

        conv_in = nn.Conv2d(inChannels, last, kernel_size: 3, stride: 1, padding: 1, device: device, dtype: dtype);

        mid_block = new UNetMidBlock2D(
            last,
            tembChannels: tembChannels,
            resnetEps: 1e-6,
            resnetTimeScaleShift: spatial ? "spatial" : "default",
            resnetActFn: actFn,
            resnetGroups: normNumGroups,
            addAttention: midBlockAddAttention,
            attentionHeadDim: last,
            outputScaleFactor: 1,
            device: device,
            dtype: dtype);

        up_blocks = new ModuleList<nn.Module<Tensor, Tensor?, Tensor>>();
        var reversed = blockOutChannels.Reverse().ToArray();
        long outputChannel = reversed[0];
        for (int i = 0; i < upBlockTypes.Count; i++)
        {
            long prevOutputChannel = outputChannel;
            outputChannel = reversed[i];
            bool isFinalBlock = i == blockOutChannels.Count - 1;
            up_blocks.Add(upBlockTypes[i] switch
            {
                "UpDecoderBlock2D" => new UpDecoderBlock2D(
                    prevOutputChannel,
                    outputChannel,
                    numLayers: layersPerBlock + 1,
                    resnetEps: 1e-6,
                    resnetTimeScaleShift: normType,
                    resnetActFn: actFn,
                    resnetGroups: normNumGroups,
                    addUpsample: !isFinalBlock,
                    tembChannels: tembChannels,
                    device: device,
                    dtype: dtype),
                "AttnUpDecoderBlock2D" => new AttnUpDecoderBlock2D(
                    prevOutputChannel,
                    outputChannel,
                    numLayers: layersPerBlock + 1,
                    resnetEps: 1e-6,
                    resnetTimeScaleShift: normType,
                    resnetActFn: actFn,
                    resnetGroups: normNumGroups,
                    attentionHeadDim: outputChannel,
                    addUpsample: !isFinalBlock,
                    tembChannels: tembChannels,
                    device: device,
                    dtype: dtype),
                string other => throw new ModelLoadException(
                    $"Decoder: unsupported up block type '{other}' (supported: UpDecoderBlock2D, AttnUpDecoderBlock2D)."),
            });
        }

        conv_norm_out = spatial
            ? new SpatialNorm(blockOutChannels[0], tembChannels!.Value, device, dtype)
            : AutoencoderLayers.GroupNorm(normNumGroups, blockOutChannels[0], 1e-6, device, dtype);
        conv_out = nn.Conv2d(blockOutChannels[0], outChannels, kernel_size: 3, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="sample">Post-quant-conv latents [B, in_channels, h, w].</param>
    /// <param name="latentEmbeds">The quantized latents for <c>norm_type = "spatial"</c>; null for <c>"group"</c>.</param>
    public override Tensor forward(Tensor sample, Tensor? latentEmbeds)
    {
        if (conv_norm_out is SpatialNorm && latentEmbeds is null)
        {
            throw new ArgumentException("a Decoder with norm_type 'spatial' needs the quantized latents.", nameof(latentEmbeds));
        }

        using var scope = torch.NewDisposeScope();
        Tensor h = conv_in.call(sample);
        h = mid_block.call(h, latentEmbeds);
        foreach (var block in up_blocks)
        {
            h = block.call(h, latentEmbeds);
        }

        h = conv_norm_out switch
        {
            GroupNorm g => g.call(h),
            SpatialNorm s => s.call(h, latentEmbeds!),
            _ => throw new InvalidOperationException($"unexpected norm module {conv_norm_out.GetType().Name}"),
        };
        h = nn.functional.silu(h);
        h = conv_out.call(h);
        return h.MoveToOuterDisposeScope();
    }
}
