using System.Security.Cryptography;
using TorchSharp;
using VqDiffusion.Model.Autoencoders;
using VqDiffusion.Model.Configuration;
using VqDiffusion.Model.Embeddings;
using VqDiffusion.Model.Loading;
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
        learned_classifier_free_sampling_embeddings = cfEmbeddings;
        Device = device;
        DType = dtype;
    }

#pragma warning disable SA1300, IDE1006 // component names as in diffusers' model_index.json
    public CLIPTokenizer tokenizer { get; }

    public CLIPTextModel text_encoder { get; }

    public Transformer2DModel transformer { get; }

    public VQModel vqvae { get; }

    public VQDiffusionScheduler scheduler { get; }

    public LearnedClassifierFreeSamplingEmbeddings learned_classifier_free_sampling_embeddings { get; }
#pragma warning restore SA1300, IDE1006

    public string ModelPath { get; }

    public Device Device { get; }

    public ScalarType DType { get; }

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
            return new VQDiffusionPipeline(root, tokenizer, textEncoder, transformer, vqvae, scheduler, cfEmbeddings, device, dtype);
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
    /// Checks a request against the model and the deployment's limits. Throws a
    /// <see cref="GenerationArgumentException"/> naming the argument and its allowed range.
    /// </summary>
    public void Validate(GenerationRequest request, GenerationLimits? limits = null)
    {
        limits ??= new GenerationLimits();
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

            if (p.Length > limits.MaxPromptCharacters)
            {
                throw new GenerationArgumentException($"prompts[{i}]", $"prompts[{i}] has {p.Length} characters; at most {limits.MaxPromptCharacters} are allowed.");
            }
        }

        if (request.NumInferenceSteps < 1 || request.NumInferenceSteps > scheduler.NumTrainTimesteps)
        {
            throw new GenerationArgumentException("num_inference_steps", $"num_inference_steps must be between 1 and {scheduler.NumTrainTimesteps}, got {request.NumInferenceSteps}.");
        }

        if (!float.IsFinite(request.GuidanceScale) || request.GuidanceScale < 0 || request.GuidanceScale > limits.MaxGuidanceScale)
        {
            throw new GenerationArgumentException("guidance_scale", $"guidance_scale must be a finite number between 0 and {limits.MaxGuidanceScale} (guidance runs when it is > 1), got {request.GuidanceScale}.");
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
        }
    }

    /// <summary>
    /// Validates the request, encodes its prompts and returns the run, ready for its first step.
    /// The caller owns (disposes) the run.
    /// </summary>
    public DenoisingRun Start(GenerationRequest request, GenerationLimits? limits = null)
    {
        Validate(request, limits);
        ulong seed = request.Seed ?? RandomSeed();
        long[] timesteps = scheduler.Timesteps(request.NumInferenceSteps);
        Tensor? embeds = null;
        Tensor? sample = null;
        try
        {
            embeds = EncodePrompt(request.Prompts, request.NumImagesPerPrompt, request.GuidanceScale > 1.0f);
            long[] shape = [request.BatchSize, transformer.NumLatentPixels];
            sample = request.InitialLatents is { } latents
                ? tensor(latents.ToArray(), shape, int64).to(Device)
                : full(shape, transformer.NumVectorEmbeds - 1, int64, Device);
            return new DenoisingRun(this, request, seed, embeds, sample, timesteps);
        }
        catch
        {
            embeds?.Dispose();
            sample?.Dispose();
            throw;
        }
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
    /// One short generation (a single guided step with truncation, then the decode) and one scheduler step at
    /// t = 1 (the posterior, which a single step at t = 0 skips), so that the first real request pays none of the
    /// one-time costs: JIT, libtorch's kernel and thread-pool set-up, the allocator growing to a step's working set.
    /// One transformer forward only: at full ITHQ size on a CPU that is most of the start-up. Returns the images
    /// (encode one to warm the image codecs too).
    /// </summary>
    public GenerationResult WarmUp()
    {
        GenerationResult result = Generate(new GenerationRequest
        {
            Prompts = ["a warm-up prompt"],
            NumInferenceSteps = 1,
            GuidanceScale = GenerationRequest.DefaultGuidanceScale,
            TruncationRate = 0.86f,
            Seed = 0,
        });

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        int classes = transformer.NumVectorEmbeds;
        Tensor logPx0 = zeros([1, transformer.NumLatentPixels, classes - 1], float32, Device).log_softmax(-1).transpose(1, 2); // the pipeline's layout
        Tensor masked = full([1, transformer.NumLatentPixels], classes - 1, int64, Device);
        using var generator = new torch.Generator(0, CPU);
        scheduler.Step(logPx0, Math.Min(1, scheduler.NumTrainTimesteps - 1), masked, generator);
        return result;
    }

    /// <summary>
    /// diffusers' <c>_encode_prompt</c>: CLIP last hidden state / its L2 norm, repeated per image;
    /// with guidance, the negative rows (learned embeddings, or the encoded empty prompt) come first.
    /// </summary>
    public Tensor EncodePrompt(IReadOnlyList<string> prompts, int numImagesPerPrompt, bool doClassifierFreeGuidance)
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
            if (learned_classifier_free_sampling_embeddings.Embeddings is { } learned)
            {
                negative = learned.unsqueeze(0).repeat(batch, 1, 1);
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
        int h = transformer.Height;
        int w = transformer.Width;
        Tensor embeddings = vqvae.quantize.GetCodebookEntry(tokens, [n, h, w, vqvae.Config.EffectiveVqEmbedDim]);
        Tensor image = vqvae.Decode(embeddings, forceNotQuantize: true).to(float32);
        image = (image / 2 + 0.5).clamp(0, 1);
        Tensor uint8 = (image.permute(0, 2, 3, 1) * 255).round().to(ScalarType.Byte).cpu().contiguous();
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

    public void Dispose()
    {
        text_encoder.Dispose();
        transformer.Dispose();
        vqvae.Dispose();
        scheduler.Dispose();
        learned_classifier_free_sampling_embeddings.Dispose();
    }
}
