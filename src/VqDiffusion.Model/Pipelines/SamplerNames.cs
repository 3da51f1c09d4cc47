namespace VqDiffusion.Model.Pipelines;

/// <summary>The names of samplers and priors in requests and on the command line.</summary>
public static class SamplerNames
{
    public static string Name(SamplerKind kind) => kind switch
    {
        SamplerKind.Diffusers => "diffusers",
        SamplerKind.VQDiffusion => "vq-diffusion",
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    public static string Name(UnmaskPrior prior) => prior switch
    {
        UnmaskPrior.None => "none",
        UnmaskPrior.HighQuality => "high-quality",
        UnmaskPrior.Purity => "purity",
        _ => throw new ArgumentOutOfRangeException(nameof(prior), prior, null),
    };

    public static string Name(ClassifierFreeEmbeddings choice) => choice switch
    {
        ClassifierFreeEmbeddings.ModelDefault => "model",
        ClassifierFreeEmbeddings.Learned => "learned",
        ClassifierFreeEmbeddings.EmptyPrompt => "empty-prompt",
        _ => throw new ArgumentOutOfRangeException(nameof(choice), choice, null),
    };

    public static bool TryParseSampler(string? name, out SamplerKind kind) => TryParse(name, out kind, SamplerKind.Diffusers, SamplerKind.VQDiffusion);

    public static bool TryParsePrior(string? name, out UnmaskPrior prior) => TryParse(name, out prior, UnmaskPrior.None, UnmaskPrior.HighQuality, UnmaskPrior.Purity);

    public static bool TryParseClassifierFree(string? name, out ClassifierFreeEmbeddings choice) =>
        TryParse(name, out choice, ClassifierFreeEmbeddings.ModelDefault, ClassifierFreeEmbeddings.Learned, ClassifierFreeEmbeddings.EmptyPrompt);

    private static bool TryParse<T>(string? name, out T value, params T[] values)
        where T : struct, Enum
    {
        foreach (T candidate in values)
        {
            if (string.Equals(name?.Trim(), Name(candidate), StringComparison.OrdinalIgnoreCase))
            {
                value = candidate;
                return true;
            }
        }

        value = default;
        return false;
    }

    private static string Name<T>(T value)
        where T : struct, Enum => value switch
        {
            SamplerKind k => Name(k),
            UnmaskPrior p => Name(p),
            ClassifierFreeEmbeddings c => Name(c),
            _ => value.ToString(),
        };
}
