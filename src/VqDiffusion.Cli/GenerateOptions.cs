using System.Globalization;
using VqDiffusion.Model.Imaging;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Cli;

/// <summary>The flags of <c>vqd generate</c>, shared by the local (<c>--model</c>) and the remote (<c>--server</c>) mode.</summary>
public sealed class GenerateOptions
{
    public const string Usage =
        "usage: vqd generate (--model DIR | --server URL) --prompt TEXT [--prompt TEXT ...] [--steps N]\n" +
        "                    [--guidance-scale G] [--truncation-rate R] [--images-per-prompt K] [--seed S]\n" +
        "                    [--latents FILE] [--sampler diffusers|vq-diffusion] [--speed S]\n" +
        "                    [--prior none|high-quality|purity] [--prior-weight W] [--unmask-schedule FILE]\n" +
        "                    [--cf-embeddings learned|empty-prompt] [--edit-tokens FILE | --edit-image FILE]\n" +
        "                    [--strength R] [--mask FILE] [--format png|jpeg|webp] [--quality Q]\n" +
        "                    [--api-key KEY] [--ca-cert FILE]\n" +
        "                    [--device cpu|cuda[:N]] [--dtype float32|float16|bfloat16] [--variant fp16]\n" +
        "                    [--quiet] --output DIR\n" +
        "--model DIR runs the diffusers pipeline folder in this process (or a Hub id ORG/NAME[@REVISION], fetched\n" +
        "through the Hugging Face cache: HF_HUB_CACHE/HF_HOME, HF_TOKEN, HF_HUB_OFFLINE, HF_ENDPOINT); --server URL (http://host:port)\n" +
        "asks a running VqDiffusion.Server instead (--device, --dtype and --variant are then the server's);\n" +
        "--api-key KEY (or VQD_API_KEY) is sent as 'authorization: Bearer KEY'; --ca-cert FILE (or VQD_CA_CERT):\n" +
        "PEM root certificate(s) to trust for an https:// server.\n" +
        "defaults (as diffusers): --steps 100 --guidance-scale 5.0 --truncation-rate 1.0 --images-per-prompt 1;\n" +
        "seed random (printed); format png; quality 90 (jpeg/webp); device cpu; dtype float32.\n" +
        "--sampler vq-diffusion: the original VQ-Diffusion samplers over all timesteps; --speed 2 (or more) is\n" +
        "fast inference, below 1 high-quality inference; --prior purity with --prior-weight r; --unmask-schedule\n" +
        "FILE: JSON array, tokens per timestep (index = t). Editing: --edit-tokens FILE (JSON [images][H*W]) or\n" +
        "--edit-image FILE, with --strength R in (0, 1] and/or --mask FILE (PNG, white = regenerate).\n" +
        "Writes DIR/000.png, DIR/001.png, ... in batch order (prompt 0's images, then prompt 1's, ...).";

    public string? Model { get; private set; }

    /// <summary><c>--server URL</c>: generate on a running VqDiffusion.Server instead of locally.</summary>
    public string? Server { get; private set; }

    /// <summary><c>--api-key KEY</c>: sent as <c>authorization: Bearer KEY</c>; null = <c>VQD_API_KEY</c>, if set.</summary>
    public string? ApiKey { get; private set; }

    /// <summary><c>--ca-cert FILE</c>: PEM roots to trust for an https:// server; null = <c>VQD_CA_CERT</c>, if set.</summary>
    public string? CaCertFile { get; private set; }

    public List<string> Prompts { get; } = [];

    /// <summary><c>--steps</c>; null = the sampler's default.</summary>
    public int? Steps { get; private set; }

    /// <summary><c>--guidance-scale</c>; null = the sampler's default.</summary>
    public float? GuidanceScale { get; private set; }

    public float TruncationRate { get; private set; } = GenerationRequest.DefaultTruncationRate;

    public int ImagesPerPrompt { get; private set; } = 1;

    public ulong? Seed { get; private set; }

    public string? LatentsFile { get; private set; }

    /// <summary><c>--sampler</c>, <c>--speed</c>, <c>--prior</c>, <c>--prior-weight</c>, <c>--cf-embeddings</c>; null when none is given.</summary>
    public SamplerOptions? Sampler { get; private set; }

    /// <summary><c>--unmask-schedule FILE</c>: a JSON array of counts, index = t.</summary>
    public string? UnmaskScheduleFile { get; private set; }

    /// <summary><c>--edit-tokens FILE</c>: JSON [images, H·W], like <c>--latents</c>.</summary>
    public string? EditTokensFile { get; private set; }

    /// <summary><c>--edit-image FILE</c>: a PNG/JPEG/WebP of the output size.</summary>
    public string? EditImageFile { get; private set; }

    /// <summary><c>--strength R</c>: the edit's noise level (the original's filter_ratio).</summary>
    public double? Strength { get; private set; }

    /// <summary><c>--mask FILE</c>: a PNG of the output size, white = regenerate.</summary>
    public string? MaskFile { get; private set; }

    /// <summary>Whether any editing flag is given.</summary>
    public bool IsEdit => EditTokensFile is not null || EditImageFile is not null || Strength is not null || MaskFile is not null;

    public ImageFormat Format { get; private set; } = ImageFormat.Png;

    public int Quality { get; private set; } = ImageEncoder.DefaultQuality;

    public string? Output { get; private set; }

    public string Device { get; private set; } = "cpu";

    public string DType { get; private set; } = "float32";

    public string? Variant { get; private set; }

    public bool Quiet { get; private set; }

    public static GenerateOptions Parse(IReadOnlyList<string> args)
    {
        var o = new GenerateOptions();
        string? localOnly = null;
        string? remoteOnly = null;
        for (int i = 0; i < args.Count; i++)
        {
            string flag = args[i];
            string? inlineValue = null;
            int eq = flag.IndexOf('=', StringComparison.Ordinal);
            if (flag.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inlineValue = flag[(eq + 1)..];
                flag = flag[..eq];
            }

            string Value()
            {
                if (inlineValue is not null)
                {
                    return inlineValue;
                }

                if (i + 1 >= args.Count)
                {
                    throw new UsageException($"{flag} needs a value.");
                }

                return args[++i];
            }

            switch (flag)
            {
                case "--model":
                    o.Model = Value();
                    break;
                case "--server":
                    o.Server = Value();
                    break;
                case "--prompt":
                    o.Prompts.Add(Value());
                    break;
                case "--steps":
                    o.Steps = ParseInt(flag, Value());
                    break;
                case "--guidance-scale":
                    o.GuidanceScale = ParseFloat(flag, Value());
                    break;
                case "--truncation-rate":
                    o.TruncationRate = ParseFloat(flag, Value());
                    break;
                case "--images-per-prompt":
                    o.ImagesPerPrompt = ParseInt(flag, Value());
                    break;
                case "--seed":
                    string s = Value();
                    o.Seed = ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out ulong seed)
                        ? seed
                        : throw new UsageException($"--seed must be an integer between 0 and {ulong.MaxValue}, got '{s}'.");
                    break;
                case "--latents":
                    o.LatentsFile = Value();
                    break;
                case "--sampler":
                    string sampler = Value();
                    o.Sampler = (o.Sampler ?? new SamplerOptions()) with
                    {
                        Kind = SamplerNames.TryParseSampler(sampler, out var kind) ? kind : throw new UsageException($"--sampler must be diffusers or vq-diffusion, got '{sampler}'."),
                    };
                    break;
                case "--speed":
                    o.Sampler = (o.Sampler ?? new SamplerOptions()) with { Speed = ParseDouble(flag, Value()) };
                    break;
                case "--prior":
                    string prior = Value();
                    o.Sampler = (o.Sampler ?? new SamplerOptions()) with
                    {
                        Prior = SamplerNames.TryParsePrior(prior, out var p) ? p : throw new UsageException($"--prior must be none, high-quality or purity, got '{prior}'."),
                    };
                    break;
                case "--prior-weight":
                    o.Sampler = (o.Sampler ?? new SamplerOptions()) with { PriorWeight = ParseDouble(flag, Value()) };
                    break;
                case "--cf-embeddings":
                    string cf = Value();
                    o.Sampler = (o.Sampler ?? new SamplerOptions()) with
                    {
                        ClassifierFreeEmbeddings = SamplerNames.TryParseClassifierFree(cf, out var c) && c != ClassifierFreeEmbeddings.ModelDefault
                            ? c
                            : throw new UsageException($"--cf-embeddings must be learned or empty-prompt, got '{cf}'."),
                    };
                    break;
                case "--unmask-schedule":
                    o.UnmaskScheduleFile = Value();
                    break;
                case "--edit-tokens":
                    o.EditTokensFile = Value();
                    break;
                case "--edit-image":
                    o.EditImageFile = Value();
                    break;
                case "--strength":
                    o.Strength = ParseDouble(flag, Value());
                    break;
                case "--mask":
                    o.MaskFile = Value();
                    break;
                case "--format":
                    string f = Value();
                    o.Format = ImageEncoder.TryParse(f, out var format) ? format : throw new UsageException($"--format must be png, jpeg or webp, got '{f}'.");
                    break;
                case "--quality":
                    o.Quality = ParseInt(flag, Value());
                    if (o.Quality is < 1 or > 100)
                    {
                        throw new UsageException($"--quality must be between 1 and 100, got {o.Quality}.");
                    }

                    break;
                case "--output":
                    o.Output = Value();
                    break;
                case "--api-key":
                    o.ApiKey = Value();
                    if (ApiKeyProblem(flag, o.ApiKey) is string problem)
                    {
                        throw new UsageException(problem);
                    }

                    remoteOnly ??= flag;
                    break;
                case "--ca-cert":
                    o.CaCertFile = Value();
                    if (o.CaCertFile.Length == 0)
                    {
                        throw new UsageException("--ca-cert must not be empty.");
                    }

                    remoteOnly ??= flag;
                    break;
                case "--device":
                    o.Device = Value();
                    localOnly ??= flag;
                    break;
                case "--dtype":
                    o.DType = Value();
                    localOnly ??= flag;
                    break;
                case "--variant":
                    o.Variant = Value();
                    localOnly ??= flag;
                    break;
                case "--quiet":
                    o.Quiet = true;
                    break;
                default:
                    throw new UsageException($"unknown option '{args[i]}'.");
            }
        }

        if (o.Server is null && remoteOnly is not null)
        {
            throw new UsageException($"{remoteOnly} needs --server (it is for reaching a running server).");
        }

        if (o.Server is not null)
        {
            if (o.Model is not null)
            {
                throw new UsageException("--model and --server cannot be used together (--model runs locally, --server asks a server).");
            }

            if (localOnly is not null)
            {
                throw new UsageException($"{localOnly} cannot be used with --server (the server chooses its device, dtype and weights).");
            }
        }

        if (o.EditTokensFile is not null && o.EditImageFile is not null)
        {
            throw new UsageException("--edit-tokens and --edit-image cannot be used together (one source).");
        }

        if (o.IsEdit && o.EditTokensFile is null && o.EditImageFile is null)
        {
            throw new UsageException("--strength and --mask edit a source: give --edit-tokens FILE or --edit-image FILE.");
        }

        if (o.Prompts.Count == 0)
        {
            throw new UsageException("at least one --prompt is required.");
        }

        if (string.IsNullOrEmpty(o.Output))
        {
            throw new UsageException("--output DIR is required.");
        }

        return o;
    }

    private static int ParseInt(string flag, string value) =>
        int.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v)
            ? v
            : throw new UsageException($"{flag} must be an integer, got '{value}'.");

    private static double ParseDouble(string flag, string value) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v)
            ? v
            : throw new UsageException($"{flag} must be a number, got '{value}'.");

    private static float ParseFloat(string flag, string value) =>
        float.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out float v)
            ? v
            : throw new UsageException($"{flag} must be a number, got '{value}'.");

    /// <summary>The usage error for an API key from <paramref name="source"/> (<c>--api-key</c>, <c>VQD_API_KEY</c>), or null; never quotes the key.</summary>
    public static string? ApiKeyProblem(string source, string key) =>
        VqDiffusion.Client.VqDiffusionClient.ApiKeyProblem(key) is string problem ? $"{source} {problem}." : null;
}
