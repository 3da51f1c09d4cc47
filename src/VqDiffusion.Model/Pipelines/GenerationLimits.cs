using System.Globalization;

namespace VqDiffusion.Model.Pipelines;

/// <summary>
/// Upper bounds a deployment puts on requests (the model itself fixes the rest). The one place their defaults are
/// defined: the server's <c>Generation</c> options start from <see cref="Default"/>, <c>vqd</c> checks local requests
/// against it, and <c>GetModelInfo</c> reports the server's values. Prompt lengths are counted in Unicode scalar
/// values (<see cref="CountCharacters"/>): an emoji is one character, whatever its UTF-8 or UTF-16 length.
/// </summary>
public sealed record GenerationLimits
{
    /// <summary>The defaults: 16 prompts of at most 2048 characters, 8 images per prompt, 16 images per request, guidance ≤ 100.</summary>
    public static GenerationLimits Default { get; } = new();

    public int MaxPrompts { get; init; } = 16;

    /// <summary>Characters (Unicode scalar values) per prompt.</summary>
    public int MaxPromptCharacters { get; init; } = 2048;

    public int MaxImagesPerPrompt { get; init; } = 8;

    /// <summary>Maximum prompts × images per prompt of one request.</summary>
    public int MaxBatchSize { get; init; } = 16;

    public float MaxGuidanceScale { get; init; } = 100f;

    /// <summary>
    /// The length of <paramref name="text"/> as the limits count it: Unicode scalar values (runes). A lone surrogate
    /// (not valid Unicode) counts as one.
    /// </summary>
    public static int CountCharacters(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int count = 0;
        foreach (System.Text.Rune _ in text.EnumerateRunes())
        {
            count++;
        }

        return count;
    }

    /// <summary>
    /// What is wrong with these limits, one message per bad value naming it with <paramref name="prefix"/>
    /// (e.g. <c>Generation:</c>); empty when they are usable.
    /// </summary>
    public IReadOnlyList<string> Problems(string prefix = "")
    {
        var problems = new List<string>();
        AtLeastOne(problems, prefix + nameof(MaxPrompts), MaxPrompts);
        AtLeastOne(problems, prefix + nameof(MaxPromptCharacters), MaxPromptCharacters);
        AtLeastOne(problems, prefix + nameof(MaxImagesPerPrompt), MaxImagesPerPrompt);
        AtLeastOne(problems, prefix + nameof(MaxBatchSize), MaxBatchSize);
        if (!float.IsFinite(MaxGuidanceScale) || MaxGuidanceScale < 0)
        {
            problems.Add(string.Create(CultureInfo.InvariantCulture, $"{prefix}{nameof(MaxGuidanceScale)} must be a finite number ≥ 0, got {MaxGuidanceScale}."));
        }

        return problems;
    }

    private static void AtLeastOne(List<string> problems, string name, int value)
    {
        if (value < 1)
        {
            problems.Add(string.Create(CultureInfo.InvariantCulture, $"{name} must be at least 1, got {value}."));
        }
    }
}
