using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Autoencoders;

/// <summary>
/// diffusers <c>VQModel</c> (models/autoencoders/vq_model.py): <see cref="Encoder"/> → <c>quant_conv</c> →
/// <see cref="VectorQuantizer"/> → <c>post_quant_conv</c> → <see cref="Decoder"/>. The VQ-Diffusion pipeline uses
/// <c>quantize.GetCodebookEntry</c> and <see cref="Decode"/> with <c>force_not_quantize</c>.
/// Module fields are named like the checkpoint's state_dict keys, so <see cref="StateDictLoader"/> loads strictly;
/// checkpoints with the old attention names (<c>query</c>/<c>key</c>/<c>value</c>/<c>proj_attn</c>, as the
/// VQ-Diffusion conversion script writes them) load with <see cref="RenameDeprecatedKey"/>.
/// Both <c>norm_type</c>s of diffusers are supported: <c>"group"</c> and <c>"spatial"</c> (MoVQ SpatialNorm).
/// </summary>
public sealed class VQModel : nn.Module
{
    private static readonly (string Old, string New)[] DeprecatedAttentionNames =
    [
        ("query", "to_q"),
        ("key", "to_k"),
        ("value", "to_v"),
        ("proj_attn", "to_out.0"),
    ];

    // Field order = diffusers' state_dict order (encoder, quant_conv, quantize, post_quant_conv, decoder).
    private readonly Encoder encoder;
    private readonly Conv2d quant_conv;

    /// <summary>The codebook (state_dict prefix <c>quantize.</c>).</summary>
    public readonly VectorQuantizer quantize;

    private readonly Conv2d post_quant_conv;
    private readonly Decoder decoder;

    public VQModel(VQModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(VQModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config;
        Validate(config);

        int vqEmbedDim = config.EffectiveVqEmbedDim;
        encoder = new Encoder(
            config.InChannels,
            config.LatentChannels,
            config.DownBlockTypes,
            config.BlockOutChannels,
            layersPerBlock: config.LayersPerBlock,
            normNumGroups: config.NormNumGroups,
            actFn: config.ActFn,
            doubleZ: false,
            midBlockAddAttention: config.MidBlockAddAttention,
            device: device,
            dtype: dtype);
        quant_conv = nn.Conv2d(config.LatentChannels, vqEmbedDim, kernel_size: 1, device: device, dtype: dtype);
        quantize = new VectorQuantizer(config.NumVqEmbeddings, vqEmbedDim, device, dtype);
        post_quant_conv = nn.Conv2d(vqEmbedDim, config.LatentChannels, kernel_size: 1, device: device, dtype: dtype);
        decoder = new Decoder(
            config.LatentChannels,
            config.OutChannels,
            config.UpBlockTypes,
            config.BlockOutChannels,
            layersPerBlock: config.LayersPerBlock,
            normNumGroups: config.NormNumGroups,
            actFn: config.ActFn,
            normType: config.NormType,
            midBlockAddAttention: config.MidBlockAddAttention,
            device: device,
            dtype: dtype);
        RegisterComponents();
        eval();
    }

    public VQModelConfig Config { get; }

    /// <summary>
    /// diffusers <c>VQModel.encode(x).latents</c>: <c>quant_conv(encoder(x))</c>, [B, vq_embed_dim, H/f, W/f] with
    /// f = 2^(len(block_out_channels) − 1). Not quantized.
    /// </summary>
    public Tensor Encode(Tensor x)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor h = encoder.call(x);
        h = quant_conv.call(h);
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers <c>VQModel.decode(h, force_not_quantize).sample</c>: unless <paramref name="forceNotQuantize"/>,
    /// <paramref name="h"/> is first snapped to the codebook (<see cref="VectorQuantizer.Quantize"/>); then
    /// <c>decoder(post_quant_conv(quant), quant if norm_type == "spatial" else None)</c>. Returns [B, out_channels, H, W]
    /// in about [-1, 1].
    /// </summary>
    /// <param name="h">Latents [B, vq_embed_dim, h, w] (e.g. from <c>quantize.GetCodebookEntry</c>).</param>
    /// <param name="forceNotQuantize">Skip the quantization (the VQ-Diffusion pipeline passes true).</param>
    public Tensor Decode(Tensor h, bool forceNotQuantize = true)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor quant = forceNotQuantize ? h : quantize.Quantize(h).ZQ;
        Tensor quant2 = post_quant_conv.call(quant);
        Tensor dec = decoder.call(quant2, Config.NormType == "spatial" ? quant : null);
        return dec.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Maps a key written with diffusers' deprecated attention-block names to the current one, as diffusers'
    /// <c>ModelMixin._convert_deprecated_attention_blocks</c> does on load:
    /// <c>&lt;path&gt;.attentions.N.{query,key,value,proj_attn}.{weight,bias}</c> →
    /// <c>&lt;path&gt;.attentions.N.{to_q,to_k,to_v,to_out.0}.{weight,bias}</c>. Every other key is returned unchanged.
    /// </summary>
    public static string RenameDeprecatedKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        string[] parts = key.Split('.');
        int n = parts.Length;
        if (n < 4 || parts[^1] is not ("weight" or "bias") || parts[^4] != "attentions" || !IsIndex(parts[^3]))
        {
            return key;
        }

        foreach (var (oldName, newName) in DeprecatedAttentionNames)
        {
            if (parts[^2] == oldName)
            {
                return string.Join('.', parts[..^2]) + "." + newName + "." + parts[^1];
            }
        }

        return key;
    }

    private static bool IsIndex(string s) => s.Length > 0 && s.All(char.IsAsciiDigit);

    private static void Validate(VQModelConfig config)
    {
        if (config.NormType is not ("group" or "spatial"))
        {
            throw new ModelLoadException($"VQModel config: unsupported norm_type '{config.NormType}' (diffusers supports 'group' and 'spatial').");
        }

        if (config.NormType == "spatial" && config.EffectiveVqEmbedDim != config.LatentChannels)
        {
            throw new ModelLoadException(
                $"VQModel config: norm_type 'spatial' conditions the decoder on the quantized latents ({config.EffectiveVqEmbedDim} channels) through SpatialNorms built for latent_channels ({config.LatentChannels}); they must be equal.");
        }

        if (config.LayersPerBlock < 1)
        {
            throw new ModelLoadException($"VQModel config: layers_per_block must be at least 1, got {config.LayersPerBlock}.");
        }

        if (config.BlockOutChannels.Length == 0 || config.BlockOutChannels.Any(c => c <= 0))
        {
            throw new ModelLoadException($"VQModel config: block_out_channels must be non-empty and positive, got [{string.Join(", ", config.BlockOutChannels)}].");
        }
    }
}
