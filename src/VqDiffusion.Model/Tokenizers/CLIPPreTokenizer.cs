using System.Globalization;
using Microsoft.ML.Tokenizers;

namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// CLIP's pre-tokenizer: <c>re.findall</c> of
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// with the <c>regex</c> module and <c>re.IGNORECASE</c>, written out as a scanner over code points.
/// A .NET <see cref="System.Text.RegularExpressions.Regex"/> classifies UTF-16 units, so a supplementary letter
/// or digit (e.g. U+1D400, a CJK Extension B ideograph) would fall into the "other" class there; Python classifies
/// the code point. Case-insensitive details that survive the lower-casing normaliser are kept: U+017F (long s)
/// folds to <c>s</c>, so <c>'ſ</c> is a contraction and <c>&lt;|ſtartoftext|&gt;</c> a special literal; U+0345
/// (combining ypogegrammeni, whose case variants are letters) is matched by neither <c>[\p{L}]</c> nor its
/// negation under IGNORECASE, so it is skipped like whitespace.
/// Stateless, so safe to share between threads.
/// </summary>
internal sealed class CLIPPreTokenizer : PreTokenizer
{
    public static readonly CLIPPreTokenizer Instance = new();

    private const int CombiningYpogegrammeni = 0x0345;
    private const char LongS = '\u017F';

    private static readonly string[] SpecialLiterals = ["<|startoftext|>", "<|endoftext|>"];
    private static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    private CLIPPreTokenizer()
    {
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => Split(text.AsSpan());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => Split(text);

    /// <summary>The (offset, length) of every match, in UTF-16 units of <paramref name="text"/>.</summary>
    public static List<(int Offset, int Length)> Split(ReadOnlySpan<char> text)
    {
        var matches = new List<(int Offset, int Length)>();
        int pos = 0;
        while (pos < text.Length)
        {
            int length = MatchLiteral(text, pos, SpecialLiterals);
            if (length == 0 && text[pos] == '\'')
            {
                length = MatchLiteral(text, pos, Contractions);
            }

            if (length > 0)
            {
                matches.Add((pos, length));
                pos += length;
                continue;
            }

            int cp = CodePointAt(text, pos, out int width);
            CharClass cls = Classify(cp);
            switch (cls)
            {
                case CharClass.Letter:
                case CharClass.Other:
                    int end = pos + width;
                    while (end < text.Length)
                    {
                        int next = CodePointAt(text, end, out int nextWidth);
                        if (Classify(next) != cls)
                        {
                            break;
                        }

                        end += nextWidth;
                    }

                    matches.Add((pos, end - pos));
                    pos = end;
                    break;
                case CharClass.Number:
                    matches.Add((pos, width));
                    pos += width;
                    break;
                default:
                    pos += width;
                    break;
            }
        }

        return matches;
    }

    private enum CharClass
    {
        Letter,
        Number,
        Other,
        Unmatched,
    }

    private static CharClass Classify(int cp)
    {
        if (PythonUnicode.IsSpace(cp) || cp == CombiningYpogegrammeni)
        {
            return CharClass.Unmatched;
        }

        return PythonUnicode.Category(cp) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => CharClass.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber
                or UnicodeCategory.OtherNumber => CharClass.Number,
            _ => CharClass.Other,
        };
    }

    private static int CodePointAt(ReadOnlySpan<char> text, int index, out int width)
    {
        char c = text[index];
        if (char.IsHighSurrogate(c) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]))
        {
            width = 2;
            return char.ConvertToUtf32(c, text[index + 1]);
        }

        width = 1;
        return c;
    }

    // The first literal (in pattern order) that matches at pos, compared case-insensitively the way the regex
    // module's simple case folding does for these ASCII patterns; returns its length or 0.
    private static int MatchLiteral(ReadOnlySpan<char> text, int pos, string[] literals)
    {
        foreach (string literal in literals)
        {
            if (pos + literal.Length > text.Length)
            {
                continue;
            }

            bool ok = true;
            for (int k = 0; k < literal.Length && ok; k++)
            {
                ok = FoldEquals(text[pos + k], literal[k]);
            }

            if (ok)
            {
                return literal.Length;
            }
        }

        return 0;
    }

    private static bool FoldEquals(char c, char patternChar)
    {
        if (c == patternChar)
        {
            return true;
        }

        if (patternChar is >= 'a' and <= 'z')
        {
            return c == (char)(patternChar - 32) || (patternChar == 's' && c == LongS);
        }

        return false;
    }
}
