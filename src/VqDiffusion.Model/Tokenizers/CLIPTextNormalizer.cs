using System.Text;
using Microsoft.ML.Tokenizers;

namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// The text clean-up of transformers' slow <c>CLIPTokenizer</c> when ftfy is not installed (the reference
/// environment): <c>" ".join(BasicTokenizer(do_lower_case=True, strip_accents=False,
/// do_split_on_punc=False, tokenize_chinese_chars=True).tokenize(text))</c>. Step by step:
/// <list type="number">
/// <item>drop NUL, U+FFFD and every category C* character except tab/newline/CR; turn whitespace
/// (space, tab, newline, CR, Zs) into a space (<c>_clean_text</c>);</item>
/// <item>put spaces around CJK ideographs (<c>_tokenize_chinese_chars</c>);</item>
/// <item>Unicode NFC;</item>
/// <item>split on Python whitespace (<c>str.split()</c>), lower-case every piece with Python's
/// <c>str.lower()</c> (accents kept, punctuation not split off);</item>
/// <item>join the pieces with one space.</item>
/// </list>
/// Stateless, so safe to share between threads.
/// </summary>
internal sealed class CLIPTextNormalizer : Normalizer
{
    public static readonly CLIPTextNormalizer Instance = new();

    private CLIPTextNormalizer()
    {
    }

    /// <summary>
    /// Throws when this process cannot compose Unicode (NFC): with <c>DOTNET_SYSTEM_GLOBALIZATION_INVARIANT</c>
    /// (or without libicu) .NET leaves <c>"e\u0301"</c> decomposed, and such prompts would silently get other ids
    /// than transformers gives them.
    /// </summary>
    public static void EnsureUnicodeNormalizationAvailable()
    {
        if ("e\u0301".Normalize(NormalizationForm.FormC) != "\u00E9")
        {
            throw new PlatformNotSupportedException(
                "The CLIP tokenizer needs Unicode NFC normalisation, which this process lacks (globalization-invariant "
                + "mode or no ICU). Install libicu and do not set DOTNET_SYSTEM_GLOBALIZATION_INVARIANT.");
        }
    }

    public override string Normalize(string original) => Normalize(original.AsSpan());

    public override string Normalize(ReadOnlySpan<char> original)
    {
        if (original.IsEmpty)
        {
            return string.Empty;
        }

        // _clean_text and _tokenize_chinese_chars, on code points.
        var cleaned = new StringBuilder(original.Length + 8);
        foreach (int cp in PythonUnicode.CodePoints(original))
        {
            if (cp == 0 || cp == 0xFFFD || PythonUnicode.IsBertControl(cp))
            {
                continue;
            }

            if (PythonUnicode.IsBertWhitespace(cp))
            {
                cleaned.Append(' ');
            }
            else if (PythonUnicode.IsChineseChar(cp))
            {
                cleaned.Append(' ');
                PythonUnicode.AppendCodePoint(cleaned, cp);
                cleaned.Append(' ');
            }
            else
            {
                PythonUnicode.AppendCodePoint(cleaned, cp);
            }
        }

        // Surrogates (category Cs) were dropped above, so the string is well formed for normalisation.
        string nfc = cleaned.ToString().Normalize(NormalizationForm.FormC);

        // whitespace_tokenize (str.split()), str.lower() per piece, " ".join(...).
        var result = new StringBuilder(nfc.Length);
        foreach (string piece in SplitOnPythonWhitespace(nfc))
        {
            if (result.Length > 0)
            {
                result.Append(' ');
            }

            result.Append(PythonUnicode.Lower(piece));
        }

        return result.ToString();
    }

    private static IEnumerable<string> SplitOnPythonWhitespace(string text)
    {
        List<int> cps = PythonUnicode.CodePoints(text);
        var piece = new StringBuilder();
        foreach (int cp in cps)
        {
            if (PythonUnicode.IsSpace(cp))
            {
                if (piece.Length > 0)
                {
                    yield return piece.ToString();
                    piece.Clear();
                }
            }
            else
            {
                PythonUnicode.AppendCodePoint(piece, cp);
            }
        }

        if (piece.Length > 0)
        {
            yield return piece.ToString();
        }
    }
}
