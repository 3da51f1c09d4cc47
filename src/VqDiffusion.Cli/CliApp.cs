using System.Globalization;
using TorchSharp;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Cli;

/// <summary>Entry point of <c>vqd</c>: exit 0 on success, 2 on bad input (one line), 1 on failure.</summary>
public static class CliApp
{
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            stdout.WriteLine("vqd: VQ-Diffusion text-to-image.\n\n" + GenerateOptions.Usage);
            return args.Length == 0 ? 2 : 0;
        }

        if (args[0] != "generate")
        {
            stderr.WriteLine($"vqd: unknown command '{args[0]}' (try 'vqd generate --help').");
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
        try
        {
            var options = GenerateOptions.Parse(args.Skip(1).ToArray());
            await Task.Run(() => GenerateLocal(options, stderr, cts.Token), cts.Token).ConfigureAwait(false);
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

    private static void GenerateLocal(GenerateOptions options, TextWriter stderr, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(options.Model))
        {
            throw new UsageException("--model DIR is required (a diffusers VQDiffusionPipeline folder).");
        }

        var load = new PipelineLoadOptions
        {
            Device = ParseDevice(options.Device),
            DType = ParseDType(options.DType),
            Variant = options.Variant,
        };
        using var pipeline = VQDiffusionPipeline.FromPretrained(options.Model, load);

        IReadOnlyList<long>? latents = null;
        if (options.LatentsFile is not null)
        {
            latents = LatentsFile.Read(options.LatentsFile, options.Prompts.Count * Math.Max(options.ImagesPerPrompt, 1), pipeline.transformer.NumLatentPixels);
        }

        var request = new GenerationRequest
        {
            Prompts = options.Prompts,
            NumInferenceSteps = options.Steps,
            GuidanceScale = options.GuidanceScale,
            TruncationRate = options.TruncationRate,
            NumImagesPerPrompt = options.ImagesPerPrompt,
            Seed = options.Seed,
            InitialLatents = latents,
        };
        pipeline.Validate(request);
        Directory.CreateDirectory(options.Output!);

        var progress = options.Quiet ? null : new ProgressBar(stderr, !Console.IsErrorRedirected);
        GenerationResult result = pipeline.Generate(request, step => progress?.Report(step.CompletedSteps, step.TotalSteps, step.Timestep), cancellationToken: cancellationToken);
        foreach (GeneratedImage image in result.Images)
        {
            string path = Path.Combine(options.Output!, $"{image.Index:D3}.{ImageEncoder.FileExtension(options.Format)}");
            File.WriteAllBytes(path, ImageEncoder.Encode(image, options.Format, options.Quality));
        }

        if (!options.Quiet)
        {
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"seed: {result.Seed}; wrote {result.Images.Count} image(s) to {options.Output}"));
        }
    }

    internal static string ToFlag(string field) => field switch
    {
        "num_inference_steps" => "--steps",
        "guidance_scale" => "--guidance-scale",
        "truncation_rate" => "--truncation-rate",
        "num_images_per_prompt" => "--images-per-prompt",
        "initial_latents" => "--latents",
        "seed" => "--seed",
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

    private static torch.ScalarType ParseDType(string value) => value.ToLowerInvariant() switch
    {
        "float32" or "fp32" => torch.ScalarType.Float32,
        "float16" or "fp16" => torch.ScalarType.Float16,
        "bfloat16" or "bf16" => torch.ScalarType.BFloat16,
        _ => throw new UsageException($"--dtype must be float32, float16 or bfloat16, got '{value}'."),
    };
}
