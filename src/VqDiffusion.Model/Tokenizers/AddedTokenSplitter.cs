namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// transformers' <c>PreTrainedTokenizer.tokenize</c> first step: the text is cut on the added tokens
/// (<c>tokens_trie.split</c>: at each position the longest added token that starts there, scanning left to
/// right; empty pieces dropped), then the <c>lstrip</c> / <c>rstrip</c> / <c>single_word</c> flags adjust the
/// neighbours. The added tokens come out as their own pieces and are never normalised or BPE-split; every other
/// piece is tokenized on its own. Immutable, so safe to share between threads.
/// </summary>
internal sealed class AddedTokenSplitter
{
    private readonly Dictionary<string, AddedTokenSpec> _tokens;
    private readonly Dictionary<char, string[]> _byFirstChar;

    public AddedTokenSplitter(IEnumerable<AddedTokenSpec> tokens)
    {
        _tokens = new Dictionary<string, AddedTokenSpec>(StringComparer.Ordinal);
        foreach (AddedTokenSpec token in tokens)
        {
            if (token.Content.Length > 0)
            {
                _tokens[token.Content] = token;
            }
        }

        _byFirstChar = _tokens.Keys
            .GroupBy(content => content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(s => s.Length).ThenBy(s => s, StringComparer.Ordinal).ToArray());
    }

    public bool IsAddedToken(string piece) => _tokens.ContainsKey(piece);

    /// <summary>The pieces of <paramref name="text"/>, in order; test each with <see cref="IsAddedToken"/>.</summary>
    public List<string> Split(string text)
    {
        var pieces = new List<string>();
        int start = 0;
        int pos = 0;
        while (pos < text.Length)
        {
            string? match = LongestMatchAt(text, pos);
            if (match is null)
            {
                pos++;
                continue;
            }

            if (pos > start)
            {
                pieces.Add(text[start..pos]);
            }

            pieces.Add(match);
            pos += match.Length;
            start = pos;
        }

        if (start < text.Length)
        {
            pieces.Add(text[start..]);
        }

        ApplyStripFlags(pieces);
        return pieces;
    }

    private string? LongestMatchAt(string text, int pos)
    {
        if (!_byFirstChar.TryGetValue(text[pos], out string[]? candidates))
        {
            return null;
        }

        foreach (string candidate in candidates)
        {
            if (pos + candidate.Length <= text.Length && string.CompareOrdinal(text, pos, candidate, 0, candidate.Length) == 0)
            {
                return candidate;
            }
        }

        return null;
    }

    // The loop of PreTrainedTokenizer.tokenize that runs over the trie's pieces, mutating neighbours in place.
    private void ApplyStripFlags(List<string> pieces)
    {
        for (int i = 0; i < pieces.Count; i++)
        {
            if (!_tokens.TryGetValue(pieces[i], out AddedTokenSpec? token))
            {
                continue;
            }

            string? left = i > 0 ? pieces[i - 1] : null;
            string? right = i < pieces.Count - 1 ? pieces[i + 1] : null;
            if (token.RStrip && !string.IsNullOrEmpty(right))
            {
                pieces[i + 1] = PythonStrip(right, fromStart: true);
            }

            if (token.LStrip && !string.IsNullOrEmpty(left))
            {
                pieces[i - 1] = PythonStrip(left, fromStart: false);
            }

            if (token.SingleWord && !string.IsNullOrEmpty(left) && left[^1] != ' ')
            {
                pieces[i - 1] += pieces[i];
                pieces[i] = string.Empty;
            }
            else if (token.SingleWord && !string.IsNullOrEmpty(right) && right[0] != ' ')
            {
                pieces[i] += right;
                pieces[i + 1] = string.Empty;
            }
        }

        pieces.RemoveAll(p => p.Length == 0);
    }

    // Python str.lstrip() / str.rstrip() without arguments.
    private static string PythonStrip(string text, bool fromStart)
    {
        List<int> cps = PythonUnicode.CodePoints(text);
        int first = 0;
        int last = cps.Count;
        if (fromStart)
        {
            while (first < last && PythonUnicode.IsSpace(cps[first]))
            {
                first++;
            }
        }
        else
        {
            while (last > first && PythonUnicode.IsSpace(cps[last - 1]))
            {
                last--;
            }
        }

        var builder = new System.Text.StringBuilder(text.Length);
        for (int k = first; k < last; k++)
        {
            PythonUnicode.AppendCodePoint(builder, cps[k]);
        }

        return builder.ToString();
    }
}
