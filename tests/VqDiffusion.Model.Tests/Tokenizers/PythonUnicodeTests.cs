using VqDiffusion.Model.Tokenizers;

namespace VqDiffusion.Model.Tests.Tokenizers;

/// <summary>
/// <see cref="PythonUnicode"/> against CPython 3.11 (Unicode 14): each expected value is <c>ascii(s.lower())</c>
/// as printed by python3. (During development the whole code space was compared: lower-casing, Cased and
/// Case_Ignorable agree for every code point assigned in Unicode 14, except U+1171E, which Unicode 15 moved
/// from Mn to Mc.)
/// </summary>
public sealed class PythonUnicodeTests
{
    [Theory]
    [InlineData("\u0130", "i\u0307")] // full lowercase mapping: two code points
    [InlineData("\u03a3\u0391\u03a3", "\u03c3\u03b1\u03c2")] // first sigma not final, last one final
    [InlineData("\u03a3", "\u03c3")] // nothing cased before it
    [InlineData("\u0391\u03a3'\u0391", "\u03b1\u03c3'\u03b1")] // apostrophe is case-ignorable: a letter follows
    [InlineData("\u0391'\u03a3", "\u03b1'\u03c2")] // apostrophe skipped backwards
    [InlineData("\u0391\u03a3\u0391", "\u03b1\u03c3\u03b1")]
    [InlineData("\u0391\u03a31", "\u03b1\u03c21")] // a digit is not cased
    [InlineData("1\u03a3", "1\u03c3")]
    [InlineData("\u02b0\u03a3", "\u02b0\u03c3")] // U+02B0 is cased but also case-ignorable: skipped
    [InlineData("\u0391\u03a3\u02b0", "\u03b1\u03c2\u02b0")]
    [InlineData("\u01c5", "\u01c6")] // titlecase digraph
    [InlineData("\u212a", "k")] // Kelvin sign
    [InlineData("\u2126", "\u03c9")] // Ohm sign
    [InlineData("\U00010400", "\U00010428")] // Deseret: a supplementary code point
    [InlineData("\u2167", "\u2177")] // Roman numeral (Nl)
    [InlineData("\u24b6", "\u24d0")] // circled letter (So)
    public void Lower_matches_python_str_lower(string text, string expected)
    {
        Assert.Equal(expected, PythonUnicode.Lower(text));
    }

    [Theory]
    [InlineData(0x20, true)]
    [InlineData(0x1C, true)]
    [InlineData(0x85, true)]
    [InlineData(0xA0, true)]
    [InlineData(0x2028, true)]
    [InlineData(0x3000, true)]
    [InlineData(0x200B, false)] // zero width space is Cf, not whitespace
    [InlineData(0x180E, false)]
    [InlineData('a', false)]
    public void IsSpace_matches_python_str_isspace(int codePoint, bool expected)
    {
        Assert.Equal(expected, PythonUnicode.IsSpace(codePoint));
    }
}
