using System.Globalization;
using Grpc.Core;
using TorchSharp;
using VqDiffusion.Client;
using VqDiffusion.Model.Hub;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Pipelines;
using GenerateRequest = VqDiffusion.Grpc.V1.GenerateRequest;
using ProtoImageFormat = VqDiffusion.Grpc.V1.ImageFormat;

namespace VqDiffusion.Cli;

/// <summary>Entry point of <c>vqd</c>: exit 0 on success, 2 on bad input (one line), 1 on failure.</summary>
public static class CliApp
{
    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken) =>
        RunAsync(args, stdout, stderr, null, cancellationToken);

    /// <param name="environment">Reads an environment variable (HF_HUB_CACHE, HF_TOKEN, ...); null = the process environment.</param>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, Func<string, string?>? environment, CancellationToken cancellationToken)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            stdout.WriteLine("vqd: VQ-Diffusion text-to-image.\n\n" + GenerateOptions.Usage + "\n\n" + InfoCommand.Usage);
            return args.Length == 0 ? 2 : 0;
        }

        if (args[0] == "info")
        {
            return InfoCommand.Run(args[1..], stdout, stderr);
        }

        if (args[0] != "generate")
        {
            stderr.WriteLine($"vqd: unknown command '{args[0]}' (try 'vqd generate --help' or 'vqd info --help').");
            return 2;
        }

        if (args.Skip(1).Any(a => a is "-h" or "--help"))
        {
            stdout.WriteLine(GenerateOptions.Usage);
            return 0;
        }

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        GenerateOptions? options = null;
        try
        {
            options = GenerateOptions.Parse(args.Skip(1).ToArray());
            if (options.Server is not null)
            {
                await GenerateRemoteAsync(options, stderr, environment ?? Environment.GetEnvironmentVariable, cts.Token).ConfigureAwait(false);
            }
            else
            {
                // On the calling thread (the main thread under `vqd`): no await has happened yet.
                GenerateLocal(options, stderr, environment, cts.Token);
            }

            return 0;
        }
        catch (UsageException ex)
        {
            stderr.WriteLine($"vqd: error: {ex.Message}");
            return 2;
        }
        catch (GenerationArgumentException ex)
        {
            stderr.WriteLine($"vqd: error: {ToFlag(ex.Field)}: {ex.Reason}");
            return 2;
        }
        catch (VqDiffusionException ex) when (ex.StatusCode == StatusCode.InvalidArgument)
        {
            stderr.WriteLine(ex.FieldViolations.Count > 0
                ? $"vqd: error: {ToFlag(ex.FieldViolations[0].Field)}: {ex.FieldViolations[0].Description}"
                : $"vqd: error: {OneLine(ex.Detail)}");
            return 2;
        }
        catch (VqDiffusionException ex)
        {
            string detail = string.IsNullOrEmpty(ex.Detail) ? string.Empty : ": " + OneLine(ex.Detail);
            stderr.WriteLine($"vqd: error: server {options?.Server}: {ex.StatusCode}{detail}");
            return 1;
        }
        catch (ModelLoadException ex)
        {
            stderr.WriteLine($"vqd: error: cannot load model: {ex.Message}");
            return 2;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("vqd: cancelled.");
            return 130;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"vqd: error: {ex.Message}");
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static void GenerateLocal(GenerateOptions options, TextWriter stderr, Func<string, string?>? environment, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(options.Model))
        {
            throw new UsageException("--model DIR (a diffusers VQDiffusionPipeline folder) or --server URL is required.");
        }

        var load = new PipelineLoadOptions
        {
            Device = ParseDevice(options.Device),
            DType = ParseDType(options.DType),
            Variant = options.Variant,
        };
        // A folder, or a Hub id resolved through the Hugging Face cache (downloading what is missing, progress on stderr).
        ResolvedModel model = ModelResolver.ResolveAsync(
            options.Model, load.Variant, HubOptions.FromEnvironment(environment), options.Quiet ? null : new DownloadProgressBar(stderr, !Console.IsErrorRedirected), cancellationToken).GetAwaiter().GetResult();
        using var pipeline = VQDiffusionPipeline.FromPretrained(model.LocalPath, load);
        var provenance = new ModelProvenance(model.Name, model.HubId?.RevisionOrDefault, model.CommitHash);

        IReadOnlyList<long>? latents = null;
        if (options.LatentsFile is not null)
        {
            latents = LatentsFile.Read(options.LatentsFile, options.Prompts.Count * Math.Max(options.ImagesPerPrompt, 1), pipeline.Info.NumLatentPixels);
        }

        int images = options.Prompts.Count * Math.Max(options.ImagesPerPrompt, 1);
        var request = new GenerationRequest
        {
            Prompts = options.Prompts,
            NumInferenceSteps = options.Steps,
            GuidanceScale = options.GuidanceScale,
            TruncationRate = options.TruncationRate,
            NumImagesPerPrompt = options.ImagesPerPrompt,
            Seed = options.Seed,
            InitialLatents = latents,
            Sampler = SamplerOptionsOf(options),
            Edit = options.IsEdit
                ? new EditOptions
                {
                    SourceTokens = options.EditTokensFile is { } tokens ? LatentsFile.Read(tokens, images, pipeline.Info.NumLatentPixels, "--edit-tokens") : null,
                    SourceImage = options.EditImageFile is { } imageFile ? ReadImage("--edit-image", imageFile, ImageEncoder.DecodeImage) : null,
                    Strength = options.Strength,
                    MaskImage = options.MaskFile is { } maskFile ? ReadImage("--mask", maskFile, ImageEncoder.DecodeMask) : null,
                }
                : null,
        };
        pipeline.Validate(request, GenerationLimits.Default); // the server's default limits, defined once
        Directory.CreateDirectory(options.Output!);

        var progress = options.Quiet ? null : new ProgressBar(stderr, !Console.IsErrorRedirected);
        GenerationResult result = pipeline.Generate(request, step => progress?.Report(step.CompletedSteps, step.TotalSteps, step.Timestep), cancellationToken: cancellationToken);
        GenerationRequest resolved = pipeline.WithDefaults(request);
        foreach (GeneratedImage image in result.Images)
        {
            string path = Path.Combine(options.Output!, $"{image.Index:D3}.{ImageEncoder.FileExtension(options.Format)}");
            File.WriteAllBytes(path, ImageEncoder.Encode(image, options.Format, options.Quality, GenerationParameters.For(resolved, result.Seed, image, provenance)));
        }

        if (!options.Quiet)
        {
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"seed: {result.Seed}; wrote {result.Images.Count} image(s) to {options.Output}"));
        }
    }

    /// <summary>The same request on a running server: same flags, same files, same messages.</summary>
    private static async Task GenerateRemoteAsync(GenerateOptions options, TextWriter stderr, Func<string, string?> environment, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(options.Server, UriKind.Absolute, out Uri? address) || address.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"--server must be an http:// or https:// URL (http://host:port), got '{options.Server}'.");
        }

        string? apiKey = options.ApiKey;
        if (apiKey is null && environment("VQD_API_KEY") is { Length: > 0 } fromEnvironment)
        {
            apiKey = GenerateOptions.ApiKeyProblem("VQD_API_KEY", fromEnvironment) is string problem ? throw new UsageException(problem) : fromEnvironment;
        }

        string? caCert = options.CaCertFile ?? (environment("VQD_CA_CERT") is { Length: > 0 } caFromEnvironment ? caFromEnvironment : null);
        string caSource = options.CaCertFile is null ? "VQD_CA_CERT" : "--ca-cert";
        if (caCert is not null && address.Scheme != Uri.UriSchemeHttps)
        {
            throw new UsageException($"{caSource} needs an https:// --server.");
        }

        using var client = new VqDiffusionClient(options.Server!, new VqDiffusionClientOptions
        {
            ApiKey = apiKey,
            RootCertificates = caCert is null ? null : CaCertFile.Read(caCert, caSource),
        });
        Grpc.V1.GetModelInfoResponse? info = null;

        // In the protocol 0 means "the server's default"; on the command line it is out of range, as locally.
        if (options.Steps == 0)
        {
            info = await client.GetModelInfoAsync(cancellationToken).ConfigureAwait(false);
            throw new GenerationArgumentException("num_inference_steps", $"num_inference_steps must be between 1 and {info.NumTrainTimesteps}, got 0.");
        }

        if (options.ImagesPerPrompt == 0)
        {
            info = await client.GetModelInfoAsync(cancellationToken).ConfigureAwait(false);
            throw new GenerationArgumentException("num_images_per_prompt", $"num_images_per_prompt must be between 1 and {info.Limits.MaxImagesPerPrompt}, got 0.");
        }

        var request = new GenerateRequest
        {
            NumInferenceSteps = options.Steps ?? 0,
            TruncationRate = options.TruncationRate,
            NumImagesPerPrompt = options.ImagesPerPrompt,
            ImageFormat = options.Format switch
            {
                ImageFormat.Jpeg => ProtoImageFormat.Jpeg,
                ImageFormat.WebP => ProtoImageFormat.Webp,
                _ => ProtoImageFormat.Png,
            },
            ImageQuality = options.Quality,
        };
        request.Prompts.AddRange(options.Prompts);
        if (options.GuidanceScale is { } guidance)
        {
            request.GuidanceScale = guidance;
        }

        if (options.Seed is { } seed)
        {
            request.Seed = seed;
        }

        if (SamplerOptionsOf(options) is { } sampler)
        {
            request.Sampler = ToProto(sampler);
        }

        if (options.IsEdit)
        {
            request.Edit = new Grpc.V1.EditOptions();
            if (options.EditTokensFile is { } tokens)
            {
                info ??= await client.GetModelInfoAsync(cancellationToken).ConfigureAwait(false);
                long[] source = LatentsFile.Read(tokens, options.Prompts.Count * Math.Max(options.ImagesPerPrompt, 1), info.LatentHeight * info.LatentWidth, "--edit-tokens");
                request.Edit.SourceTokens.AddRange(source.Select(v => (int)Math.Clamp(v, int.MinValue, int.MaxValue)));
            }

            if (options.EditImageFile is { } image)
            {
                request.Edit.SourceImage = Google.Protobuf.ByteString.CopyFrom(ReadFile("--edit-image", image));
            }

            if (options.Strength is { } strength)
            {
                request.Edit.Strength = strength;
            }

            if (options.MaskFile is { } mask)
            {
                request.Edit.MaskImage = Google.Protobuf.ByteString.CopyFrom(ReadFile("--mask", mask));
            }
        }

        if (options.LatentsFile is not null)
        {
            info ??= await client.GetModelInfoAsync(cancellationToken).ConfigureAwait(false);
            long[] latents = LatentsFile.Read(options.LatentsFile, options.Prompts.Count * Math.Max(options.ImagesPerPrompt, 1), info.LatentHeight * info.LatentWidth);

            // Out-of-range values stay out of range (clamped to int32), so the server rejects them by name.
            request.InitialLatents.AddRange(latents.Select(v => (int)Math.Clamp(v, int.MinValue, int.MaxValue)));
        }

        var progress = options.Quiet ? null : new ProgressBar(stderr, !Console.IsErrorRedirected);
        ulong? usedSeed = null;
        int written = 0;
        await foreach (GenerationEvent e in client.GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            switch (e)
            {
                case GenerationEvent.Started started:
                    usedSeed = started.Seed;
                    Directory.CreateDirectory(options.Output!);
                    break;
                case GenerationEvent.Progress step:
                    progress?.Report(step.CompletedSteps, step.TotalSteps, step.Timestep);
                    break;
                case GenerationEvent.ImageGenerated image:
                    string path = Path.Combine(options.Output!, $"{image.Index:D3}.{ImageEncoder.FileExtension(options.Format)}");
                    await File.WriteAllBytesAsync(path, image.Data, cancellationToken).ConfigureAwait(false);
                    written++;
                    break;
            }
        }

        if (!options.Quiet)
        {
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"seed: {usedSeed}; wrote {written} image(s) to {options.Output}"));
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    /// <summary>The sampler flags as request options (the schedule read from its file); null when none is given.</summary>
    private static SamplerOptions? SamplerOptionsOf(GenerateOptions options)
    {
        if (options.Sampler is null && options.UnmaskScheduleFile is null)
        {
            return null;
        }

        SamplerOptions sampler = options.Sampler ?? new SamplerOptions();
        return options.UnmaskScheduleFile is { } file ? sampler with { UnmaskSchedule = ScheduleFile.Read(file) } : sampler;
    }

    private static Grpc.V1.SamplerOptions ToProto(SamplerOptions sampler)
    {
        var proto = new Grpc.V1.SamplerOptions
        {
            Kind = sampler.Kind == SamplerKind.VQDiffusion ? Grpc.V1.SamplerKind.VqDiffusion : Grpc.V1.SamplerKind.Diffusers,
            Prior = sampler.Prior switch
            {
                UnmaskPrior.HighQuality => Grpc.V1.UnmaskPrior.HighQuality,
                UnmaskPrior.Purity => Grpc.V1.UnmaskPrior.Purity,
                _ => Grpc.V1.UnmaskPrior.None,
            },
            PriorWeight = sampler.PriorWeight,
            ClassifierFreeEmbeddings = sampler.ClassifierFreeEmbeddings switch
            {
                ClassifierFreeEmbeddings.Learned => Grpc.V1.ClassifierFreeEmbeddings.Learned,
                ClassifierFreeEmbeddings.EmptyPrompt => Grpc.V1.ClassifierFreeEmbeddings.EmptyPrompt,
                _ => Grpc.V1.ClassifierFreeEmbeddings.Unspecified,
            },
            Speed = sampler.Speed,
        };
        if (sampler.UnmaskSchedule is { } schedule)
        {
            proto.UnmaskSchedule.AddRange(schedule);
        }

        return proto;
    }

    private static byte[] ReadFile(string flag, string path)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{flag} {path}: {ex.Message}");
        }
    }

    private static T ReadImage<T>(string flag, string path, Func<byte[], T> decode)
    {
        byte[] bytes = ReadFile(flag, path);
        try
        {
            return decode(bytes);
        }
        catch (ArgumentException)
        {
            throw new UsageException($"{flag} {path}: not a decodable image (PNG, JPEG or WebP).");
        }
    }

    internal static string ToFlag(string field) => field switch
    {
        "image_format" => "--format",
        "image_quality" => "--quality",
        "num_inference_steps" => "--steps",
        "guidance_scale" => "--guidance-scale",
        "truncation_rate" => "--truncation-rate",
        "num_images_per_prompt" => "--images-per-prompt",
        "initial_latents" => "--latents",
        "seed" => "--seed",
        "sampler.kind" => "--sampler",
        "sampler.speed" => "--speed",
        "sampler.prior" => "--prior",
        "sampler.prior_weight" => "--prior-weight",
        "sampler.classifier_free_embeddings" => "--cf-embeddings",
        "edit.source_image" => "--edit-image",
        "edit.strength" => "--strength",
        "edit.mask" or "edit.mask_image" => "--mask",
        _ when field.StartsWith("sampler.unmask_schedule", StringComparison.Ordinal) => "--unmask-schedule" + field["sampler.unmask_schedule".Length..],
        _ when field.StartsWith("edit.source_tokens", StringComparison.Ordinal) => "--edit-tokens" + field["edit.source_tokens".Length..],
        _ when field.StartsWith("prompts", StringComparison.Ordinal) => "--prompt" + field["prompts".Length..],
        _ => field,
    };

    private static torch.Device ParseDevice(string value)
    {
        try
        {
            var device = new torch.Device(value);
            if (device.type == DeviceType.CUDA && !torch.cuda.is_available())
            {
                throw new UsageException($"--device {value}: CUDA is not available in this build or on this machine.");
            }

            return device;
        }
        catch (ArgumentException)
        {
            throw new UsageException($"--device must be cpu or cuda[:N], got '{value}'.");
        }
    }

    private static torch.ScalarType ParseDType(string value) =>
        PipelineLoadOptions.TryParseDType(value, out var dtype)
            ? dtype
            : throw new UsageException($"--dtype must be float32, float16 or bfloat16, got '{value}'.");
}
