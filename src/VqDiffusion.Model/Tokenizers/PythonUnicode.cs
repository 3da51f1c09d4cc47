using System.Globalization;
using System.Text;

namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// The few pieces of CPython / transformers' Unicode behaviour the CLIP tokenizer depends on, on code points
/// (a .NET <see cref="char"/> is a UTF-16 unit; a supplementary character is one code point here, as in Python):
/// <c>str.isspace</c> (what <c>str.split()</c> splits on), <c>str.lower</c> (full lowercase mapping, i.e.
/// <c>'İ'</c> → <c>"i̇"</c>, and the context-sensitive Greek final sigma), and transformers'
/// <c>_is_control</c> / <c>_is_whitespace</c> / <c>_is_chinese_char</c> helpers of <c>BasicTokenizer</c>.
/// </summary>
internal static class PythonUnicode
{
    private const int CapitalSigma = 0x03A3;
    private const int SmallSigma = 0x03C3;
    private const int SmallFinalSigma = 0x03C2;
    private const int CapitalIWithDotAbove = 0x0130;

    // Unicode PropList.txt Other_Lowercase / Other_Uppercase: with Ll / Lu / Lt they make up the derived
    // property Cased that CPython's final-sigma rule tests.
    private static readonly (int First, int Last)[] OtherLowercase =
    [
        (0x00AA, 0x00AA), (0x00BA, 0x00BA), (0x02B0, 0x02B8), (0x02C0, 0x02C1), (0x02E0, 0x02E4),
        (0x0345, 0x0345), (0x037A, 0x037A), (0x10FC, 0x10FC), (0x1D2C, 0x1D6A), (0x1D78, 0x1D78),
        (0x1D9B, 0x1DBF), (0x2071, 0x2071), (0x207F, 0x207F), (0x2090, 0x209C), (0x2170, 0x217F),
        (0x24D0, 0x24E9), (0x2C7C, 0x2C7D), (0xA69C, 0xA69D), (0xA770, 0xA770), (0xA7F2, 0xA7F4),
        (0xA7F8, 0xA7F9), (0xAB5C, 0xAB5F), (0xAB69, 0xAB69), (0x10780, 0x10780), (0x10783, 0x10785),
        (0x10787, 0x107B0), (0x107B2, 0x107BA), (0x1E030, 0x1E06D),
    ];

    private static readonly (int First, int Last)[] OtherUppercase =
    [
        (0x2160, 0x216F), (0x24B6, 0x24CF), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189),
    ];

    // Word_Break = MidLetter, MidNumLet or Single_Quote: with Mn, Me, Cf, Lm and Sk they make up the derived
    // property Case_Ignorable.
    private static readonly int[] WordBreakMidLetterOrQuote =
    [
        0x0027, 0x002E, 0x003A, 0x00B7, 0x0387, 0x055F, 0x05F4, 0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
        0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A,
    ];

    /// <summary>The code points of a string; an unpaired surrogate is kept as its own (Cs) code point.</summary>
    public static List<int> CodePoints(ReadOnlySpan<char> text)
    {
        var result = new List<int>(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                result.Add(char.ConvertToUtf32(c, text[i + 1]));
                i++;
            }
            else
            {
                result.Add(c);
            }
        }

        return result;
    }

    public static void AppendCodePoint(StringBuilder builder, int codePoint)
    {
        if (codePoint < 0x10000)
        {
            builder.Append((char)codePoint);
        }
        else
        {
            builder.Append(char.ConvertFromUtf32(codePoint));
        }
    }

    public static UnicodeCategory Category(int codePoint) => CharUnicodeInfo.GetUnicodeCategory(codePoint);

    /// <summary>CPython <c>str.isspace()</c> for one code point: bidi class WS, B or S, or category Zs.</summary>
    public static bool IsSpace(int cp) =>
        cp is (>= 0x09 and <= 0x0D) or (>= 0x1C and <= 0x20) or 0x85 or 0xA0 or 0x1680 or (>= 0x2000 and <= 0x200A)
            or 0x2028 or 0x2029 or 0x202F or 0x205F or 0x3000;

    /// <summary>transformers <c>_is_whitespace</c>: space, tab, newline, carriage return, or category Zs.</summary>
    public static bool IsBertWhitespace(int cp) =>
        cp is ' ' or '\t' or '\n' or '\r' || Category(cp) == UnicodeCategory.SpaceSeparator;

    /// <summary>transformers <c>_is_control</c>: any category C* except tab, newline and carriage return.</summary>
    public static bool IsBertControl(int cp)
    {
        if (cp is '\t' or '\n' or '\r')
        {
            return false;
        }

        return Category(cp) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    /// <summary>transformers <c>BasicTokenizer._is_chinese_char</c> (the CJK Unified Ideographs blocks).</summary>
    public static bool IsChineseChar(int cp) =>
        cp is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF)
            or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B820 and <= 0x2CEAF)
            or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);

    /// <summary>Unicode derived property Cased (Lowercase, Uppercase or Lt), as CPython's <c>_PyUnicode_IsCased</c>.</summary>
    public static bool IsCased(int cp)
    {
        UnicodeCategory category = Category(cp);
        return category is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
                or UnicodeCategory.TitlecaseLetter
            || InRanges(OtherLowercase, cp) || InRanges(OtherUppercase, cp);
    }

    /// <summary>Unicode derived property Case_Ignorable, as CPython's <c>_PyUnicode_IsCaseIgnorable</c>.</summary>
    public static bool IsCaseIgnorable(int cp)
    {
        UnicodeCategory category = Category(cp);
        return category is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
                or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol
            || Array.IndexOf(WordBreakMidLetterOrQuote, cp) >= 0;
    }

    /// <summary>
    /// CPython <c>str.lower()</c>: the full lowercase mapping (U+0130 becomes <c>"i\u0307"</c>, two code points;
    /// .NET's invariant casing leaves it unchanged) and U+03A3 becomes the final sigma U+03C2 when it ends a word
    /// (a cased letter before it and none after it, case-ignorable characters skipped), U+03C3 otherwise.
    /// Every other code point takes its simple lowercase mapping.
    /// </summary>
    public static string Lower(string text)
    {
        List<int> cps = CodePoints(text);
        var builder = new StringBuilder(text.Length + 4);
        for (int i = 0; i < cps.Count; i++)
        {
            int cp = cps[i];
            switch (cp)
            {
                case CapitalIWithDotAbove:
                    builder.Append('i').Append('\u0307');
                    break;
                case CapitalSigma:
                    builder.Append((char)(IsFinalSigma(cps, i) ? SmallFinalSigma : SmallSigma));
                    break;
                default:
                    AppendCodePoint(builder, SimpleLower(cp));
                    break;
            }
        }

        return builder.ToString();
    }

    private static int SimpleLower(int cp)
    {
        if (cp < 0x80)
        {
            return cp is >= 'A' and <= 'Z' ? cp + 32 : cp;
        }

        if (!Rune.IsValid(cp))
        {
            return cp;
        }

        return Rune.ToLowerInvariant(new Rune(cp)).Value;
    }

    // CPython unicodeobject.c handle_capital_sigma:
    // \p{cased} \p{case-ignorable}* U+03A3 !( \p{case-ignorable}* \p{cased} )
    private static bool IsFinalSigma(List<int> cps, int index)
    {
        int j = index - 1;
        while (j >= 0 && IsCaseIgnorable(cps[j]))
        {
            j--;
        }

        if (j < 0 || !IsCased(cps[j]))
        {
            return false;
        }

        j = index + 1;
        while (j < cps.Count && IsCaseIgnorable(cps[j]))
        {
            j++;
        }

        return j == cps.Count || !IsCased(cps[j]);
    }

    private static bool InRanges((int First, int Last)[] ranges, int cp)
    {
        foreach ((int first, int last) in ranges)
        {
            if (cp >= first && cp <= last)
            {
                return true;
            }
        }

        return false;
    }
}
