using System.Security.Cryptography;
using TorchSharp;
using VqDiffusion.Model.Autoencoders;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Embeddings;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Pipelines.Samplers;
using VqDiffusion.Model.Runtime;
using VqDiffusion.Model.Schedulers;
using VqDiffusion.Model.TextEncoders;
using VqDiffusion.Model.Tokenizers;
using VqDiffusion.Model.Transformers;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// Port of diffusers' <c>VQDiffusionPipeline</c>: CLIP text encoding, the discrete transformer's
/// log p(x0), classifier-free guidance, truncation, the mask-and-replace scheduler and VQ decoding.
/// A request with seed S reproduces diffusers with <c>torch.Generator("cpu").manual_seed(S)</c>.
/// The denoising loop goes through a sampler family (<see cref="SamplerKind"/>): diffusers' (the default) or the
/// original microsoft/VQ-Diffusion samplers (fast, high-quality and purity-prior inference); both edit and inpaint a
/// source (<see cref="EditOptions"/>).
/// </summary>
public sealed class VQDiffusionPipeline : IDisposable
{
    /// <summary>Random seeds are drawn below 2^53 so every client language can hold them exactly.</summary>
    public const ulong MaxRandomSeed = 1UL << 53;

    private VQDiffusionPipeline(
        string modelPath,
        CLIPTokenizer tokenizer,
        CLIPTextModel textEncoder,
        Transformer2DModel transformer,
        VQModel vqvae,
        VQDiffusionScheduler scheduler,
        DiffusionTransformerScheduler originalScheduler,
        LearnedClassifierFreeSamplingEmbeddings cfEmbeddings,
        Device device,
        ScalarType dtype)
    {
        ModelPath = modelPath;
        this.tokenizer = tokenizer;
        text_encoder = textEncoder;
        this.transformer = transformer;
        this.vqvae = vqvae;
        this.scheduler = scheduler;
        OriginalScheduler = originalScheduler;
        learned_classifier_free_sampling_embeddings = cfEmbeddings;
        Device = device;
        DType = dtype;
        _samplers = new Dictionary<SamplerKind, ISampler>
        {
            [SamplerKind.Diffusers] = new DiffusersSampler(this),
            [SamplerKind.VQDiffusion] = new VQDiffusionSampler(this),
        };
    }

    private readonly Dictionary<SamplerKind, ISampler> _samplers;
    private PipelineInfo? _info;

#pragma warning disable SA1300, IDE1006 // component names as in diffusers' model_index.json
    public CLIPTokenizer tokenizer { get; }

    public CLIPTextModel text_encoder { get; }

    public Transformer2DModel transformer { get; }

    public VQModel vqvae { get; }

    public VQDiffusionScheduler scheduler { get; }

    public LearnedClassifierFreeSamplingEmbeddings learned_classifier_free_sampling_embeddings { get; }
#pragma warning restore SA1300, IDE1006

    /// <summary>
    /// The original VQ-Diffusion code's schedule and posterior (its <c>DiffusionTransformer</c>), for the vq-diffusion
    /// sampler and the start of edits; the same tables as <see cref="scheduler"/> plus the t − 1 = −1 entry.
    /// </summary>
    public DiffusionTransformerScheduler OriginalScheduler { get; }

    public string ModelPath { get; }

    public Device Device { get; }

    public ScalarType DType { get; }

    /// <summary>What hosts report about this pipeline (grid, classes, timesteps, image size, samplers, device, dtype).</summary>
    public PipelineInfo Info => _info ??= new PipelineInfo(
        ModelPath,
        transformer.Height,
        transformer.Width,
        ImageHeight,
        ImageWidth,
        transformer.NumVectorEmbeds - 1,
        transformer.NumVectorEmbeds,
        scheduler.NumTrainTimesteps,
        tokenizer.ModelMaxLength,
        Math.Min(GenerationRequest.DefaultNumInferenceSteps, scheduler.NumTrainTimesteps),
        GenerationRequest.DefaultGuidanceScale,
        GenerationRequest.DefaultTruncationRate,
        Device.ToString(),
        PipelineLoadOptions.DTypeName(DType),
        learned_classifier_free_sampling_embeddings.Learnable,
        DescribeSamplers());

    /// <summary>Output image size in pixels (the latent grid times the VQ-VAE's upsampling factor).</summary>
    public int ImageHeight => transformer.Height * VaeScaleFactor;

    public int ImageWidth => transformer.Width * VaeScaleFactor;

    public int VaeScaleFactor => 1 << (vqvae.Config.BlockOutChannels.Length - 1);

    /// <summary>Loads a diffusers <c>VQDiffusionPipeline</c> folder (e.g. microsoft/vq-diffusion-ithq).</summary>
    public static VQDiffusionPipeline FromPretrained(string modelPath, PipelineLoadOptions? options = null)
    {
        options ??= new PipelineLoadOptions();
        MklReproducibility.Configure(); // before the first matrix product (a no-op once the host has done it)
        Device device = options.Device ?? CPU;
        ScalarType dtype = options.DType;
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
        {
            throw new ArgumentException($"dtype must be float32, float16 or bfloat16, not {dtype}.", nameof(options));
        }

        string root = Path.GetFullPath(modelPath);
        var index = ModelIndex.Load(Path.Combine(root, "model_index.json"));
        foreach (string component in new[] { "tokenizer", "text_encoder", "transformer", "vqvae", "scheduler" })
        {
            if (!Directory.Exists(Path.Combine(root, component)))
            {
                throw new ModelLoadException($"{root}: component folder '{component}' is missing (model_index.json lists: {string.Join(", ", index.Components.Keys)}).");
            }
        }

        var disposables = new List<IDisposable>();
        try
        {
            var tokenizer = CLIPTokenizer.FromFolder(Path.Combine(root, "tokenizer"));

            string textDir = Path.Combine(root, "text_encoder");
            var textConfig = ConfigFile.Load<CLIPTextConfig>(Path.Combine(textDir, "config.json"));
            // Modules are built on the meta device (no storage, no random initialisation) and their tensors are
            // the ones read from the files (StateDictLoader.Materialize).
            var textEncoder = Track(new CLIPTextModel(textConfig, META, dtype), disposables);
            StateDictLoader.Materialize(textEncoder, WeightsLocator.Locate(textDir, options.Variant), device, new LoadOptions { IgnoreKey = CLIPTextModel.IsIgnoredKey });

            string transformerDir = Path.Combine(root, "transformer");
            var transformerConfig = ConfigFile.Load<Transformer2DModelConfig>(Path.Combine(transformerDir, "config.json"));
            var transformer = Track(new Transformer2DModel(transformerConfig, META, dtype), disposables);
            StateDictLoader.Materialize(transformer, WeightsLocator.Locate(transformerDir, options.Variant), device);

            string vqvaeDir = Path.Combine(root, "vqvae");
            var vqConfig = ConfigFile.Load<VQModelConfig>(Path.Combine(vqvaeDir, "config.json"));
            var vqvae = Track(new VQModel(vqConfig, META, dtype), disposables);
            StateDictLoader.Materialize(vqvae, WeightsLocator.Locate(vqvaeDir, options.Variant), device, new LoadOptions { RenameKey = VQModel.RenameDeprecatedKey });

            string schedulerConfigPath = Path.Combine(root, "scheduler", "scheduler_config.json");
            var schedulerConfig = ConfigFile.Load<VQDiffusionSchedulerConfig>(schedulerConfigPath);
            if (schedulerConfig.NumVecClasses is null)
            {
                throw new ModelLoadException($"{schedulerConfigPath}: required key 'num_vec_classes' is missing.");
            }

            var scheduler = Track(new VQDiffusionScheduler(schedulerConfig, device), disposables);
            var originalScheduler = Track(new DiffusionTransformerScheduler(schedulerConfig, device), disposables);

            string cfDir = Path.Combine(root, "learned_classifier_free_sampling_embeddings");
            LearnedClassifierFreeSamplingEmbeddings cfEmbeddings;
            if (Directory.Exists(cfDir))
            {
                var cfConfig = ConfigFile.Load<LearnedClassifierFreeSamplingEmbeddingsConfig>(Path.Combine(cfDir, "config.json"));
                if (cfConfig.Learnable is null)
                {
                    throw new ModelLoadException($"{Path.Combine(cfDir, "config.json")}: required key 'learnable' is missing.");
                }

                cfEmbeddings = Track(new LearnedClassifierFreeSamplingEmbeddings(cfConfig, cfConfig.Learnable == true ? META : device, dtype), disposables);
                if (cfEmbeddings.Learnable)
                {
                    StateDictLoader.Materialize(cfEmbeddings, WeightsLocator.Locate(cfDir, options.Variant), device);
                }
            }
            else
            {
                cfEmbeddings = Track(new LearnedClassifierFreeSamplingEmbeddings(new LearnedClassifierFreeSamplingEmbeddingsConfig { Learnable = false }, device, dtype), disposables);
            }

            CheckConsistency(root, tokenizer, textConfig, transformer, vqConfig, scheduler, cfEmbeddings);

            textEncoder.eval();
            transformer.eval();
            vqvae.eval();
            cfEmbeddings.eval();
            return new VQDiffusionPipeline(root, tokenizer, textEncoder, transformer, vqvae, scheduler, originalScheduler, cfEmbeddings, device, dtype);
        }
        catch
        {
            foreach (var d in disposables)
            {
                d.Dispose();
            }

            throw;
        }
    }

    private static T Track<T>(T item, List<IDisposable> list)
        where T : IDisposable
    {
        list.Add(item);
        return item;
    }

    private static void CheckConsistency(
        string root,
        CLIPTokenizer tokenizer,
        CLIPTextConfig textConfig,
        Transformer2DModel transformer,
        VQModelConfig vqConfig,
        VQDiffusionScheduler scheduler,
        LearnedClassifierFreeSamplingEmbeddings cfEmbeddings)
    {
        if (scheduler.NumEmbed != transformer.NumVectorEmbeds)
        {
            throw new ModelLoadException($"{root}: scheduler num_vec_classes {scheduler.NumEmbed} differs from transformer num_vector_embeds {transformer.NumVectorEmbeds}.");
        }

        if (vqConfig.NumVqEmbeddings != transformer.NumVectorEmbeds - 1)
        {
            throw new ModelLoadException($"{root}: vqvae num_vq_embeddings {vqConfig.NumVqEmbeddings} must be transformer num_vector_embeds - 1 = {transformer.NumVectorEmbeds - 1}.");
        }

        if (transformer.Config.CrossAttentionDim is int cross && cross != textConfig.HiddenSize)
        {
            throw new ModelLoadException($"{root}: transformer cross_attention_dim {cross} differs from text_encoder hidden_size {textConfig.HiddenSize}.");
        }

        if (tokenizer.ModelMaxLength > textConfig.MaxPositionEmbeddings)
        {
            throw new ModelLoadException($"{root}: tokenizer model_max_length {tokenizer.ModelMaxLength} exceeds text_encoder max_position_embeddings {textConfig.MaxPositionEmbeddings}.");
        }

        if (cfEmbeddings.Embeddings is { } emb && (emb.shape[0] != tokenizer.ModelMaxLength || emb.shape[1] != textConfig.HiddenSize))
        {
            throw new ModelLoadException(
                $"{root}: learned_classifier_free_sampling_embeddings are [{emb.shape[0]}, {emb.shape[1]}], expected [{tokenizer.ModelMaxLength}, {textConfig.HiddenSize}] (model_max_length, text hidden_size).");
        }
    }

    /// <summary>
    /// The request with its unset values (steps, guidance) set to the defaults of its sampler and mode
    /// (see <see cref="GenerationRequest.NumInferenceSteps"/> and <see cref="GenerationRequest.GuidanceScale"/>).
    /// </summary>
    public GenerationRequest WithDefaults(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return SamplerFor(request).WithDefaults(request);
    }

    /// <summary>
    /// Checks a request against the model and the deployment's limits. Throws a
    /// <see cref="GenerationArgumentException"/> naming the argument and its allowed range.
    /// </summary>
    public void Validate(GenerationRequest request, GenerationLimits? limits = null) => Check(WithDefaults(request), limits ?? GenerationLimits.Default);

    /// <summary>
    /// The timestep of every step a request will take (after <see cref="Validate"/>): what progress counts, one entry
    /// per network evaluation of the batch.
    /// </summary>
    public IReadOnlyList<long> PlannedTimesteps(GenerationRequest request, GenerationLimits? limits = null)
    {
        GenerationRequest resolved = WithDefaults(request);
        SamplingStart start = Check(resolved, limits ?? GenerationLimits.Default);
        return SamplerFor(resolved).PlannedTimesteps(resolved, start);
    }

    /// <summary>The sampler families this pipeline serves, with their speeds and default schedules for this model.</summary>
    public IReadOnlyList<SamplerInfo> DescribeSamplers() => _samplers.Values.Select(s => s.Describe()).ToList();

    private ISampler SamplerFor(GenerationRequest request) =>
        _samplers.TryGetValue(request.SamplerOrDefault.Kind, out ISampler? sampler)
            ? sampler
            : throw new GenerationArgumentException("sampler.kind", $"sampler.kind must be diffusers or vq-diffusion, got {(int)request.SamplerOrDefault.Kind}.");

    private SamplingStart Check(GenerationRequest request, GenerationLimits limits)
    {
        if (request.Prompts is null || request.Prompts.Count == 0)
        {
            throw new GenerationArgumentException("prompts", "prompts must contain at least one prompt.");
        }

        if (request.Prompts.Count > limits.MaxPrompts)
        {
            throw new GenerationArgumentException("prompts", $"prompts has {request.Prompts.Count} entries; at most {limits.MaxPrompts} are allowed.");
        }

        for (int i = 0; i < request.Prompts.Count; i++)
        {
            string? p = request.Prompts[i];
            if (p is null)
            {
                throw new GenerationArgumentException($"prompts[{i}]", $"prompts[{i}] is null.");
            }

            // Unicode scalar values, not UTF-16 units: 2048 emoji are 2048 characters.
            int characters = p.Length <= limits.MaxPromptCharacters ? p.Length : GenerationLimits.CountCharacters(p);
            if (characters > limits.MaxPromptCharacters)
            {
                throw new GenerationArgumentException($"prompts[{i}]", $"prompts[{i}] has {characters} characters; at most {limits.MaxPromptCharacters} are allowed.");
            }
        }

        if (request.Edit?.Strength is double strength)
        {
            int timesteps = scheduler.NumTrainTimesteps;
            if (!double.IsFinite(strength) || strength <= 0 || strength > 1 || SamplingStart.EditStartStep(timesteps, strength) < 1)
            {
                throw new GenerationArgumentException("edit.strength",
                    $"edit.strength must be in (0, 1] and at least 1/{timesteps} (the edit starts at t = int({timesteps} × strength) − 1), got {strength.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}.");
            }
        }

        ISampler sampler = SamplerFor(request);
        sampler.ValidateSteps(request);

        float guidance = request.GuidanceScale ?? GenerationRequest.DefaultGuidanceScale;
        if (!float.IsFinite(guidance) || guidance < 0 || guidance > limits.MaxGuidanceScale)
        {
            throw new GenerationArgumentException("guidance_scale", $"guidance_scale must be a finite number between 0 and {limits.MaxGuidanceScale} (guidance runs when it is > 1), got {guidance}.");
        }

        if (!float.IsFinite(request.TruncationRate) || request.TruncationRate <= 0 || request.TruncationRate > 1)
        {
            throw new GenerationArgumentException("truncation_rate", $"truncation_rate must be in (0, 1], got {request.TruncationRate}.");
        }

        if (request.NumImagesPerPrompt < 1 || request.NumImagesPerPrompt > limits.MaxImagesPerPrompt)
        {
            throw new GenerationArgumentException("num_images_per_prompt", $"num_images_per_prompt must be between 1 and {limits.MaxImagesPerPrompt}, got {request.NumImagesPerPrompt}.");
        }

        if (request.BatchSize > limits.MaxBatchSize)
        {
            throw new GenerationArgumentException("num_images_per_prompt", $"prompts × num_images_per_prompt = {request.BatchSize} exceeds the limit of {limits.MaxBatchSize} images per request.");
        }

        long minMasked = transformer.NumLatentPixels;
        if (request.InitialLatents is { } latents)
        {
            long expected = (long)request.BatchSize * transformer.NumLatentPixels;
            if (latents.Count != expected)
            {
                throw new GenerationArgumentException("initial_latents",
                    $"initial_latents must have images × H × W = {request.BatchSize} × {transformer.Height} × {transformer.Width} = {expected} values, got {latents.Count}.");
            }

            for (int i = 0; i < latents.Count; i++)
            {
                if (latents[i] < 0 || latents[i] >= transformer.NumVectorEmbeds)
                {
                    throw new GenerationArgumentException("initial_latents",
                        $"initial_latents[{i}] = {latents[i]} is not a valid token; values must be in 0..{transformer.NumVectorEmbeds - 1} ({transformer.NumVectorEmbeds - 1} = mask).");
                }
            }

            minMasked = latents.Chunk(transformer.NumLatentPixels).Min(row => (long)row.Count(v => v == transformer.NumVectorEmbeds - 1));
        }

        if (request.SamplerOrDefault.ClassifierFreeEmbeddings is not (ClassifierFreeEmbeddings.ModelDefault or ClassifierFreeEmbeddings.Learned or ClassifierFreeEmbeddings.EmptyPrompt))
        {
            throw new GenerationArgumentException("sampler.classifier_free_embeddings", $"sampler.classifier_free_embeddings must be learned, empty-prompt or unset, got {(int)request.SamplerOrDefault.ClassifierFreeEmbeddings}.");
        }

        if (request.SamplerOrDefault.ClassifierFreeEmbeddings == ClassifierFreeEmbeddings.Learned && !learned_classifier_free_sampling_embeddings.Learnable)
        {
            throw new GenerationArgumentException("sampler.classifier_free_embeddings",
                "sampler.classifier_free_embeddings is learned, but this model's classifier-free embeddings are not learnable (it guides with the empty prompt).");
        }

        SamplingStart start = request.Edit is { } edit ? CheckEdit(request, edit) : new SamplingStart(null, minMasked);
        sampler.Validate(request, start);
        return start;
    }

    /// <summary>The edit's fields: one source of the right size and token range, at most one mask of the right size, and a strength or a mask.</summary>
    private SamplingStart CheckEdit(GenerationRequest request, EditOptions edit)
    {
        int pixels = transformer.NumLatentPixels;
        int codes = transformer.NumVectorEmbeds - 1;
        if (request.InitialLatents is not null)
        {
            throw new GenerationArgumentException("initial_latents", "initial_latents cannot be combined with edit: the edit's source is the start.");
        }

        if (edit.SourceTokens is null && edit.SourceImage is null)
        {
            throw new GenerationArgumentException("edit.source_tokens", "edit needs a source: edit.source_tokens (a token grid per image) or edit.source_image (an image to encode).");
        }

        if (edit.SourceTokens is not null && edit.SourceImage is not null)
        {
            throw new GenerationArgumentException("edit.source_image", "edit takes one source: edit.source_tokens or edit.source_image, not both.");
        }

        if (edit.SourceTokens is { } tokens)
        {
            long expected = (long)request.BatchSize * pixels;
            if (tokens.Count != expected)
            {
                throw new GenerationArgumentException("edit.source_tokens",
                    $"edit.source_tokens must have images × H × W = {request.BatchSize} × {transformer.Height} × {transformer.Width} = {expected} values, got {tokens.Count}.");
            }

            for (int i = 0; i < tokens.Count; i++)
            {
                if (tokens[i] < 0 || tokens[i] >= codes)
                {
                    throw new GenerationArgumentException($"edit.source_tokens[{i}]",
                        $"edit.source_tokens[{i}] = {tokens[i]} is not an image token; values must be in 0..{codes - 1} (the mask class {codes} is not a source).");
                }
            }
        }

        if (edit.SourceImage is { } image && (image.Width != ImageWidth || image.Height != ImageHeight || image.Rgb is null || image.Rgb.Length != image.Width * image.Height * 3))
        {
            throw new GenerationArgumentException("edit.source_image",
                $"edit.source_image must be an RGB image of the model's output size {ImageWidth} × {ImageHeight}, got {image.Width} × {image.Height}.");
        }

        if (edit.Mask is not null && edit.MaskImage is not null)
        {
            throw new GenerationArgumentException("edit.mask_image", "edit takes one mask: edit.mask (latent grid) or edit.mask_image (pixels), not both.");
        }

        bool[]? regenerate = null;
        if (edit.Mask is { } mask)
        {
            if (mask.Count != pixels)
            {
                throw new GenerationArgumentException("edit.mask", $"edit.mask must have H × W = {transformer.Height} × {transformer.Width} = {pixels} values (true = regenerate), got {mask.Count}.");
            }

            regenerate = mask.ToArray();
        }

        if (edit.MaskImage is { } maskImage)
        {
            if (maskImage.Width != ImageWidth || maskImage.Height != ImageHeight || maskImage.Masked is null || maskImage.Masked.Length != maskImage.Width * maskImage.Height)
            {
                throw new GenerationArgumentException("edit.mask_image",
                    $"edit.mask_image must be a mask of the model's output size {ImageWidth} × {ImageHeight}, got {maskImage.Width} × {maskImage.Height}.");
            }

            regenerate = LatentMask(maskImage);
        }

        if (regenerate is not null && !regenerate.Contains(true))
        {
            throw new GenerationArgumentException(edit.Mask is not null ? "edit.mask" : "edit.mask_image", "the edit's mask marks no token to regenerate.");
        }

        if (edit.Strength is null && regenerate is null)
        {
            throw new GenerationArgumentException("edit.strength",
                "edit needs edit.strength (noise the source and denoise it) and/or a mask (regenerate the masked tokens, keep the others).");
        }

        return new SamplingStart(edit.Strength, edit.Strength is null ? regenerate!.Count(r => r) : pixels);
    }

    /// <summary>
    /// An image-space mask reduced to the latent grid: a token is regenerated when any pixel of its
    /// <see cref="VaeScaleFactor"/> × <see cref="VaeScaleFactor"/> patch is masked.
    /// </summary>
    public bool[] LatentMask(PixelMask mask)
    {
        ArgumentNullException.ThrowIfNull(mask);
        int f = VaeScaleFactor;
        int h = transformer.Height;
        int w = transformer.Width;
        var tokens = new bool[h * w];
        for (int y = 0; y < mask.Height; y++)
        {
            for (int x = 0; x < mask.Width; x++)
            {
                if (mask.Masked[(y * mask.Width) + x] && y / f < h && x / f < w)
                {
                    tokens[((y / f) * w) + (x / f)] = true;
                }
            }
        }

        return tokens;
    }

    /// <summary>
    /// Validates the request, encodes its prompts, prepares its start (all masked, the given latents, or the edit's
    /// source, noised with the run's generator when the edit has a strength) and returns the run, ready for its first
    /// step. The caller owns (disposes) the run.
    /// </summary>
    public DenoisingRun Start(GenerationRequest request, GenerationLimits? limits = null)
    {
        GenerationRequest resolved = WithDefaults(request);
        SamplingStart start = Check(resolved, limits ?? GenerationLimits.Default);
        ISampler sampler = SamplerFor(resolved);
        ulong seed = resolved.Seed ?? RandomSeed();
        int[] rowOrder = sampler.RowOrder(resolved);
        var generator = new torch.Generator(seed, CPU);
        ISamplerRun? run = null;
        Tensor? sample = null;
        InpaintingMask? inpainting = null;
        try
        {
            run = sampler.Start(resolved, start, rowOrder);
            (sample, inpainting) = InitialSample(resolved, rowOrder, generator);
            return new DenoisingRun(this, resolved, seed, generator, sample, run, rowOrder, inpainting);
        }
        catch
        {
            run?.Dispose();
            sample?.Dispose();
            inpainting?.Dispose();
            generator.Dispose();
            throw;
        }
    }

    /// <summary>The start tokens in the sampler's row order, and the inpainting constraint when the edit has a mask.</summary>
    private (Tensor Sample, InpaintingMask? Inpainting) InitialSample(GenerationRequest request, int[] rowOrder, torch.Generator generator)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        long[] shape = [request.BatchSize, transformer.NumLatentPixels];
        int maskClass = transformer.NumVectorEmbeds - 1;
        if (request.Edit is not { } edit)
        {
            Tensor start = request.InitialLatents is { } latents
                ? ToRowOrder(tensor(latents.ToArray(), shape, int64).to(Device), rowOrder)
                : full(shape, maskClass, int64, Device);
            return (start.MoveToOuterDisposeScope(), null);
        }

        Tensor source = edit.SourceTokens is { } tokens
            ? ToRowOrder(tensor(tokens.ToArray(), shape, int64).to(Device), rowOrder)
            : EncodeImageTokens(edit.SourceImage!).expand(shape).contiguous();

        // DALLE.sample: x_t ~ q(x_t | x_0 = source) at t = start_step - 1, one rand [B, K, N] from the run's generator.
        Tensor sample = edit.Strength is double strength
            ? OriginalScheduler.QSample(source, SamplingStart.EditStartStep(OriginalScheduler.NumTimesteps, strength) - 1, generator)
            : full(shape, maskClass, int64, Device);

        bool[]? regenerate = edit.Mask?.ToArray() ?? (edit.MaskImage is { } pixels ? LatentMask(pixels) : null);
        if (regenerate is null)
        {
            return (sample.MoveToOuterDisposeScope(), null);
        }

        var inpainting = new InpaintingMask(
            source.DetachFromDisposeScope(),
            tensor(regenerate, [1, transformer.NumLatentPixels]).to(Device).DetachFromDisposeScope());
        return (inpainting.Apply(sample).MoveToOuterDisposeScope(), inpainting);
    }

    /// <summary>Prompt-major rows [B, …] put in the sampler's row order (<c>result[rowOrder[i]] = rows[i]</c>).</summary>
    internal static Tensor ToRowOrder(Tensor rows, int[] rowOrder)
    {
        var inverse = new long[rowOrder.Length];
        for (int i = 0; i < rowOrder.Length; i++)
        {
            inverse[rowOrder[i]] = i;
        }

        using Tensor index = tensor(inverse, ScalarType.Int64).to(rows.device);
        return rows.index_select(0, index);
    }

    /// <summary>
    /// An RGB image of the output size encoded by the VQ-VAE and quantised to its nearest codes: the token grid
    /// [1, H·W] (int64, on the model's device). Pixels are scaled to [−1, 1] as diffusers' image processor does.
    /// </summary>
    public Tensor EncodeImageTokens(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        Tensor rgb = tensor(image.Rgb, [1, image.Height, image.Width, 3], ScalarType.Byte);
        Tensor x = ((rgb.to(float32) / 255.0) * 2 - 1).permute(0, 3, 1, 2).contiguous().to(DType, Device);
        Tensor latents = vqvae.Encode(x);
        var (_, indices) = vqvae.quantize.Quantize(latents);
        if (indices.shape[1] != transformer.NumLatentPixels)
        {
            throw new InvalidOperationException($"the VQ-VAE encodes a {image.Width} × {image.Height} image to {indices.shape[1]} tokens; the transformer's grid has {transformer.NumLatentPixels}.");
        }

        return indices.to(int64, Device).MoveToOuterDisposeScope();
    }

    private static ulong RandomSeed()
    {
        Span<byte> bytes = stackalloc byte[8];
        RandomNumberGenerator.Fill(bytes);
        return BitConverter.ToUInt64(bytes) % MaxRandomSeed;
    }

    /// <summary>
    /// Runs a whole generation. <paramref name="onStep"/> is called after every step;
    /// <paramref name="cancellationToken"/> is checked between steps.
    /// </summary>
    public GenerationResult Generate(GenerationRequest request, Action<StepContext>? onStep = null, GenerationLimits? limits = null, CancellationToken cancellationToken = default)
    {
        using DenoisingRun run = Start(request, limits);
        while (!run.IsDone)
        {
            cancellationToken.ThrowIfCancellationRequested();
            StepContext step = run.Step();
            onStep?.Invoke(step);
        }

        cancellationToken.ThrowIfCancellationRequested();
        return new GenerationResult(run.Decode(), run.Seed, run.Timesteps);
    }

    /// <summary>
    /// Gets the pipeline ready for its first request: every weight page brought into memory
    /// (<see cref="WeightPages.Prefetch"/>: mapped weights are otherwise read on first use), then one short generation
    /// (a single guided step with truncation through the transformer's first block only, then the decode) and one
    /// scheduler step at t = 1 (the posterior, which a single step at t = 0 skips), so that the first real request pays
    /// none of the one-time costs: page faults, JIT, libtorch's kernel and thread-pool set-up, the allocator growing to a
    /// step's working set. Every transformer block has the same shapes, so one block warms what all of them use, at
    /// 1/num_layers of a forward (the full ITHQ model's 36-block forward is most of a CPU start-up otherwise). Returns
    /// the images (encode one to warm the image codecs too); they are not those of a full generation.
    /// </summary>
    public GenerationResult WarmUp()
    {
        WeightPages.Prefetch(Weights());
        GenerationResult result;
        transformer.BlocksToRun = 1;
        try
        {
            result = Generate(new GenerationRequest
            {
                Prompts = ["a warm-up prompt"],
                NumInferenceSteps = 1,
                GuidanceScale = GenerationRequest.DefaultGuidanceScale,
                TruncationRate = 0.86f,
                Seed = 0,
            });
        }
        finally
        {
            transformer.BlocksToRun = int.MaxValue;
        }

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int classes = transformer.NumVectorEmbeds;
        Tensor logPx0 = zeros([1, transformer.NumLatentPixels, classes - 1], float32, Device).log_softmax(-1).transpose(1, 2); // the pipeline's layout
        Tensor masked = full([1, transformer.NumLatentPixels], classes - 1, int64, Device);
        using var generator = new torch.Generator(0, CPU);
        scheduler.Step(logPx0, Math.Min(1, scheduler.NumTrainTimesteps - 1), masked, generator);
        return result;
    }

    /// <summary>Every parameter and buffer of the pipeline's modules (the pipeline owns them).</summary>
    internal IEnumerable<Tensor> Weights() =>
        new nn.Module[] { text_encoder, transformer, vqvae, learned_classifier_free_sampling_embeddings }
            .SelectMany(m => m.parameters().Cast<Tensor>().Concat(m.buffers()));

    /// <summary>
    /// diffusers' <c>_encode_prompt</c>: CLIP last hidden state / its L2 norm, repeated per image;
    /// with guidance, the negative rows (learned embeddings, or the encoded empty prompt) come first.
    /// </summary>
    public Tensor EncodePrompt(IReadOnlyList<string> prompts, int numImagesPerPrompt, bool doClassifierFreeGuidance) =>
        EncodePrompt(prompts, numImagesPerPrompt, doClassifierFreeGuidance, ClassifierFreeEmbeddings.ModelDefault);

    /// <summary><see cref="EncodePrompt(IReadOnlyList{string}, int, bool)"/> with the choice of negative embeddings.</summary>
    public Tensor EncodePrompt(IReadOnlyList<string> prompts, int numImagesPerPrompt, bool doClassifierFreeGuidance, ClassifierFreeEmbeddings negatives)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int batch = prompts.Count;
        int maxLength = tokenizer.ModelMaxLength;
        Tensor promptEmbeds = text_encoder.forward(IdsTensor(prompts.Select(tokenizer.EncodeForPipeline), maxLength));
        promptEmbeds = promptEmbeds / promptEmbeds.norm(-1, keepdim: true);
        promptEmbeds = promptEmbeds.repeat_interleave(numImagesPerPrompt, dim: 0);

        if (doClassifierFreeGuidance)
        {
            Tensor negative;
            if (UsesLearnedNegatives(negatives))
            {
                negative = LearnedNegatives(batch);
            }
            else
            {
                int[] uncond = tokenizer.Call(string.Empty, maxLength, truncation: true);
                negative = text_encoder.forward(IdsTensor(Enumerable.Repeat(uncond, batch), maxLength));
                negative = negative / negative.norm(-1, keepdim: true);
            }

            long seqLen = negative.shape[1];
            negative = negative.repeat(1, numImagesPerPrompt, 1).view(batch * numImagesPerPrompt, seqLen, -1);
            promptEmbeds = cat([negative, promptEmbeds], 0);
        }

        return promptEmbeds.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One row of normalised CLIP text embeddings per text ([rows, model_max_length, hidden]): the original's
    /// <c>condition_emb</c> on its batch of condition tokens (one forward of all rows).
    /// </summary>
    internal Tensor EncodeTexts(IReadOnlyList<string> texts)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int maxLength = tokenizer.ModelMaxLength;
        Tensor embeds = text_encoder.forward(IdsTensor(texts.Select(tokenizer.EncodeForPipeline), maxLength));
        embeds = embeds / embeds.norm(-1, keepdim: true);
        return embeds.MoveToOuterDisposeScope();
    }

    /// <summary>Whether guidance uses the learned negative embeddings for this choice (else the empty prompt).</summary>
    internal bool UsesLearnedNegatives(ClassifierFreeEmbeddings choice) =>
        choice != ClassifierFreeEmbeddings.EmptyPrompt && learned_classifier_free_sampling_embeddings.Learnable;

    /// <summary>The learned negative embeddings repeated for <paramref name="rows"/> rows, [rows, length, hidden].</summary>
    internal Tensor LearnedNegatives(int rows)
    {
        Tensor learned = learned_classifier_free_sampling_embeddings.Embeddings ?? throw new InvalidOperationException("this model's classifier-free embeddings are not learnable.");
        return learned.unsqueeze(0).repeat(rows, 1, 1);
    }

    /// <summary>Token id rows (each at least <paramref name="length"/> long) as an int64 [rows, length] tensor on the model's device.</summary>
    private Tensor IdsTensor(IEnumerable<int[]> rows, int length)
    {
        long[] ids = rows.SelectMany(r => r.Take(length)).Select(id => (long)id).ToArray();
        Tensor cpu = tensor(ids, [ids.Length / length, length], int64);
        if (Device.type == DeviceType.CPU)
        {
            return cpu;
        }

        using (cpu)
        {
            return cpu.to(Device);
        }
    }

    /// <summary>
    /// diffusers' <c>truncate</c>: per latent pixel, keep the most likely classes while their
    /// cumulative probability stays below <paramref name="truncationRate"/> (always the top one);
    /// the others become -inf. Computed in float32 like diffusers, so a rate of 1.0 can still drop
    /// the least likely classes.
    /// </summary>
    /// <remarks>
    /// The same decisions as diffusers' sort → cumsum → <c>gather(argsort(indices))</c>, at a fraction of the
    /// cost: on the CPU in float32, <see cref="TruncationKernel"/> finds each pixel's cut from its probabilities
    /// alone, and only pixels where tied classes straddle the cut go through libtorch's sort
    /// (<see cref="TruncateBySort"/>), whose tie order decides there, as in diffusers. The result has each pixel's
    /// classes contiguous in memory (a <c>[B, N, K]</c> tensor seen as <c>[B, K, N]</c>), the layout of diffusers'
    /// log p(x0) and of <see cref="Transformer2DModel.LogPx0"/>; an input in another layout is copied to it first.
    /// </remarks>
    public static Tensor Truncate(Tensor logPx0, float truncationRate) => Truncate(logPx0, truncationRate, null);

    /// <summary>
    /// <see cref="Truncate(Tensor, float)"/> followed by <c>clamp(min)</c> (diffusers' <c>clamp(-70)</c> after the
    /// truncation), in one pass on the CPU.
    /// </summary>
    internal static Tensor Truncate(Tensor logPx0, float truncationRate, float? clampMin)
    {
        using var scope = NewDisposeScope();

        // [B, N, K]: each pixel's classes contiguous (the pipeline's own layout: no copy).
        Tensor rows = logPx0.dim() == 3 ? logPx0.transpose(1, 2).contiguous() : logPx0;
        if (logPx0.dim() != 3 || !CpuKernel.Readable(rows))
        {
            Tensor sorted = TruncateBySort(logPx0, truncationRate);
            return (clampMin is float min ? sorted.clamp_(min: min) : sorted).MoveToOuterDisposeScope();
        }

        Tensor probabilities = rows.exp();
        float[] thresholds = TruncationKernel.Thresholds(probabilities, truncationRate);
        Tensor result = TruncationKernel.Apply(rows, probabilities, thresholds, clampMin);

        // Pixels where the order of tied classes decides: libtorch's sort, as diffusers.
        long pixels = rows.shape[1];
        for (int i = 0; i < thresholds.Length; i++)
        {
            if (float.IsNaN(thresholds[i]))
            {
                long b = i / pixels;
                long n = i % pixels;
                Tensor row = TruncateBySort(rows[b, n].reshape(1, -1, 1), truncationRate);
                if (clampMin is float min)
                {
                    row.clamp_(min: min);
                }

                result[b, n] = row.reshape(-1);
            }
        }

        return result.transpose(1, 2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Truncate"/> by sorting, any device or dtype: the classes sorted along a contiguous axis (a
    /// transposed copy), the kept values scattered back through the sort indices (no second sort to invert the
    /// permutation). Ties keep libtorch's sort order, as in diffusers.
    /// </summary>
    public static Tensor TruncateBySort(Tensor logPx0, float truncationRate)
    {
        using var scope = NewDisposeScope();

        // [B, N, K]: one row of classes per latent pixel, contiguous, so the sort runs along memory.
        Tensor rows = logPx0.transpose(1, 2).contiguous();
        var (sorted, indices) = rows.sort(-1, descending: true);

        // A class is dropped when the classes ranked before it already reach the rate.
        Tensor cumulative = sorted.exp().cumsum(-1);
        Tensor dropSorted = empty_like(cumulative, dtype: ScalarType.Bool);
        dropSorted[.., .., 0].fill_(false);
        dropSorted[.., .., 1..].copy_(cumulative[.., .., ..^1].lt(truncationRate).logical_not_());
        sorted.masked_fill_(dropSorted, float.NegativeInfinity);

        Tensor result = empty_like(rows).scatter_(-1, indices, sorted);
        return result.transpose(1, 2).MoveToOuterDisposeScope();
    }

    /// <summary>Decodes token grids [N, H·W] to 8-bit RGB images.</summary>
    internal IReadOnlyList<GeneratedImage> DecodeToImages(Tensor tokens, int numImagesPerPrompt)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        long n = tokens.shape[0];
        Tensor pixels = DecodePixels(tokens);
        Tensor uint8 = (pixels * 255).round().to(ScalarType.Byte).cpu().contiguous();
        int height = (int)uint8.shape[1];
        int width = (int)uint8.shape[2];
        byte[] all = uint8.data<byte>().ToArray();
        int size = height * width * 3;
        var images = new GeneratedImage[n];
        for (int i = 0; i < n; i++)
        {
            images[i] = new GeneratedImage(i, i / numImagesPerPrompt, width, height, all.AsSpan(i * size, size).ToArray());
        }

        return images;
    }

    /// <summary>
    /// diffusers' decode of token grids [N, H·W]: codebook lookup, the VQ decoder, <c>(x / 2 + 0.5).clamp(0, 1)</c>,
    /// as [N, height, width, 3] float32 (a permuted view).
    /// </summary>
    internal Tensor DecodePixels(Tensor tokens)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        long n = tokens.shape[0];
        int h = transformer.Height;
        int w = transformer.Width;
        Tensor embeddings = vqvae.quantize.GetCodebookEntry(tokens, [n, h, w, vqvae.Config.EffectiveVqEmbedDim]);
        Tensor image = vqvae.Decode(embeddings, forceNotQuantize: true).to(float32);
        image = (image / 2 + 0.5).clamp(0, 1);
        return image.permute(0, 2, 3, 1).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        text_encoder.Dispose();
        transformer.Dispose();
        vqvae.Dispose();
        scheduler.Dispose();
        OriginalScheduler.Dispose();
        learned_classifier_free_sampling_embeddings.Dispose();
    }
}
