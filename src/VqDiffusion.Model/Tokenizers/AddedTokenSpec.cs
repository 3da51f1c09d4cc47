namespace VqDiffusion.Model.Tokenizers;

/// <summary>
/// A transformers <c>AddedToken</c>: a string the tokenizer never splits (special tokens and entries of
/// <c>added_tokens_decoder</c>), with the flags that change how its neighbours are cut.
/// </summary>
/// <param name="Content">The literal text.</param>
/// <param name="LStrip">Eats the whitespace on its left.</param>
/// <param name="RStrip">Eats the whitespace on its right.</param>
/// <param name="SingleWord">Only matches as a whole word.</param>
internal sealed record AddedTokenSpec(string Content, bool LStrip = false, bool RStrip = false, bool SingleWord = false);
