using TorchSharp;
using TorchSharp.Modules;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Embeddings;
using VqDiffusion.Model.Loading;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Transformers;

/// <summary>
/// diffusers <c>Transformer2DModel</c>, discrete (vectorized-input) form, as VQ-Diffusion uses it: latent codes
/// <c>[B, H·W]</c> → <see cref="ImagePositionalEmbeddings"/> → <see cref="BasicTransformerBlock"/>s (timestep-
/// conditioned AdaLayerNorm, cross-attention on the text embeddings) → <c>norm_out</c> → <c>out</c> →
/// <c>log_softmax</c> over the <c>num_vector_embeds − 1</c> code classes (computed in float64, returned as float32).
/// Continuous and patched inputs are not supported.
/// </summary>
public sealed class Transformer2DModel : nn.Module
{
    // Field order = diffusers' registration order = the checkpoint's key order.
    private readonly ImagePositionalEmbeddings latent_image_embedding;
    private readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    private readonly LayerNorm norm_out;
    private readonly Linear @out;

    public Transformer2DModel(Transformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Transformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Validate(config);
        Config = config;
        NormType = config.EffectiveNormType;
        NumVectorEmbeds = config.NumVectorEmbeds!.Value;
        Height = config.SampleSize!.Value;
        Width = config.SampleSize!.Value;
        NumLatentPixels = Height * Width;
        InnerDim = config.InnerDim;

        latent_image_embedding = new ImagePositionalEmbeddings(NumVectorEmbeds, Height, Width, InnerDim, device, dtype);
        transformer_blocks = new ModuleList<BasicTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
        {
            transformer_blocks.Add(new BasicTransformerBlock(
                InnerDim,
                config.NumAttentionHeads,
                config.AttentionHeadDim,
                dropout: config.Dropout,
                crossAttentionDim: config.CrossAttentionDim,
                activationFn: config.ActivationFn,
                numEmbedsAdaNorm: config.NumEmbedsAdaNorm,
                attentionBias: config.AttentionBias,
                onlyCrossAttention: config.OnlyCrossAttention,
                doubleSelfAttention: config.DoubleSelfAttention,
                upcastAttention: config.UpcastAttention,
                normElementwiseAffine: config.NormElementwiseAffine,
                normType: NormType,
                normEps: config.NormEps,
                attentionType: config.AttentionType,
                device: device,
                dtype: dtype));
        }

        norm_out = nn.LayerNorm(InnerDim, device: device, dtype: dtype);
        @out = nn.Linear(InnerDim, NumVectorEmbeds - 1, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
        eval();
    }

    public Transformer2DModelConfig Config { get; }

    /// <summary>The norm type in effect (<see cref="Transformer2DModelConfig.EffectiveNormType"/>).</summary>
    public string NormType { get; }

    /// <summary>Number of latent classes including the mask class (<c>num_vector_embeds − 1</c>).</summary>
    public int NumVectorEmbeds { get; }

    public int Height { get; }

    public int Width { get; }

    public int NumLatentPixels { get; }

    public int InnerDim { get; }

    /// <summary>
    /// How many of the blocks <see cref="ForwardLogits"/> runs: all of them, except in the pipeline's warm-up, which runs
    /// the first one only (every block has the same shapes, so one block sets up the same kernels and the same working
    /// set as all of them, at 1/num_layers of a forward's cost: most of the start-up of the full ITHQ model on a CPU).
    /// </summary>
    internal int BlocksToRun { get; set; } = int.MaxValue;

    /// <param name="latents">int64 <c>[B, H·W]</c> latent classes in <c>[0, num_vector_embeds)</c> (the last class is the mask).</param>
    /// <param name="encoderHiddenStates"><c>[B, 77, cross_attention_dim]</c> text embeddings (in the model's dtype).</param>
    /// <param name="timestep">One diffusion timestep for the whole batch, in <c>[0, num_embeds_ada_norm)</c>.</param>
    /// <returns>log p(x₀), float32 <c>[B, num_vector_embeds − 1, H·W]</c>.</returns>
    public Tensor forward(Tensor latents, Tensor? encoderHiddenStates, long timestep)
    {
        ArgumentNullException.ThrowIfNull(latents);
        if (Config.NumEmbedsAdaNorm is int steps && (timestep < 0 || timestep >= steps))
        {
            throw new ArgumentOutOfRangeException(nameof(timestep), timestep, $"timestep must be in [0, {steps}) (num_embeds_ada_norm).");
        }

        using var t = torch.tensor(timestep, dtype: ScalarType.Int64, device: latents.device);
        return forward(latents, encoderHiddenStates, t);
    }

    /// <summary>As <see cref="forward(Tensor, Tensor?, long)"/> with the timestep as a 0-dim int64 tensor (as diffusers passes it).</summary>
    public Tensor forward(Tensor latents, Tensor? encoderHiddenStates, Tensor timestep)
    {
        using var scope = NewDisposeScope();
        Tensor logits = ForwardLogits(latents, encoderHiddenStates, timestep);
        return LogPx0(logits).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The blocks, <c>norm_out</c> and <c>out</c>: the class logits, <c>[B, H·W, num_vector_embeds − 1]</c>
    /// (classes last, contiguous). <see cref="LogPx0"/> turns them into the model's output.
    /// </summary>
    public Tensor ForwardLogits(Tensor latents, Tensor? encoderHiddenStates, Tensor timestep)
    {
        ArgumentNullException.ThrowIfNull(latents);
        ArgumentNullException.ThrowIfNull(timestep);
        if (latents.dim() != 2 || latents.dtype != ScalarType.Int64 || latents.shape[1] > NumLatentPixels)
        {
            throw new ArgumentException(
                $"latents must be int64 [batch, <= {NumLatentPixels}]; got {latents.dtype} [{string.Join(", ", latents.shape)}].", nameof(latents));
        }

        using var noGrad = torch.no_grad();
        using var scope = NewDisposeScope();

        // 1. Input
        Tensor hiddenStates = latent_image_embedding.forward(latents);

        // 2. Blocks (each block's input is released as soon as its output exists: one hidden state at a time)
        int blocks = 0;
        foreach (BasicTransformerBlock block in transformer_blocks)
        {
            if (blocks++ == BlocksToRun)
            {
                break;
            }

            Tensor next = block.forward(hiddenStates, encoderHiddenStates, timestep);
            hiddenStates.Dispose();
            hiddenStates = next;
        }

        // 3. Output projection
        return @out.forward(norm_out.forward(hiddenStates)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// log p(x₀) from <see cref="ForwardLogits"/>: <c>log_softmax</c> over the classes in float64 (as diffusers),
    /// returned as float32 <c>[B, num_vector_embeds − 1, H·W]</c> with each pixel's classes contiguous in memory (a
    /// permuted <c>[B, H·W, classes]</c> tensor, exactly the layout of diffusers' <c>log_softmax(logits.permute(0, 2,
    /// 1).double(), dim=1).float()</c>, so later reductions over the classes run along memory as in diffusers). On the
    /// CPU <see cref="LogPx0Kernel"/> computes it a slice of pixels at a time (the same bits, no whole-size float64
    /// temporaries).
    /// </summary>
    public static Tensor LogPx0(Tensor logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        using var noGrad = torch.no_grad();
        if (LogPx0Kernel.TryLogPx0(logits) is { } sliced)
        {
            return sliced;
        }

        using var scope = NewDisposeScope();
        Tensor logP = nn.functional.log_softmax(logits.to(ScalarType.Float64), -1);
        return logP.to(ScalarType.Float32).permute(0, 2, 1).MoveToOuterDisposeScope();
    }

    private static void Validate(Transformer2DModelConfig config)
    {
        const string Only = "only the discrete (vectorized-input) VQ-Diffusion Transformer2DModel is supported";
        if (config.NumVectorEmbeds is null)
        {
            string kind = config.InChannels is null ? "no input kind"
                : config.PatchSize is null ? $"continuous input (in_channels {config.InChannels})"
                : $"patched input (in_channels {config.InChannels}, patch_size {config.PatchSize})";
            throw new ModelLoadException($"transformer config: {Only}; this config describes {kind} (num_vector_embeds is not set).");
        }

        if (config.InChannels is not null)
        {
            throw new ModelLoadException(
                $"transformer config: cannot define both in_channels ({config.InChannels}) and num_vector_embeds ({config.NumVectorEmbeds}); {Only}.");
        }

        if (config.PatchSize is not null)
        {
            throw new ModelLoadException(
                $"transformer config: cannot define both num_vector_embeds ({config.NumVectorEmbeds}) and patch_size ({config.PatchSize}); {Only}.");
        }

        if (config.SampleSize is not int size || size <= 0)
        {
            throw new ModelLoadException("transformer config: a discrete Transformer2DModel needs a positive sample_size (the latent grid width).");
        }

        if (config.NumVectorEmbeds < 2)
        {
            throw new ModelLoadException($"transformer config: num_vector_embeds must be at least 2 (codes + mask class), got {config.NumVectorEmbeds}.");
        }

        if (config.NumAttentionHeads <= 0 || config.AttentionHeadDim <= 0 || config.NumLayers < 0)
        {
            throw new ModelLoadException(
                $"transformer config: invalid sizes (num_attention_heads {config.NumAttentionHeads}, attention_head_dim {config.AttentionHeadDim}, num_layers {config.NumLayers}).");
        }

        if (config.NumEmbedsAdaNorm is <= 0)
        {
            throw new ModelLoadException($"transformer config: num_embeds_ada_norm must be positive, got {config.NumEmbedsAdaNorm}.");
        }
    }
}
