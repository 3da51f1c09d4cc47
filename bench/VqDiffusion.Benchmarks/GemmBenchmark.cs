using System.Diagnostics;
using VqDiffusion.Model.Pipelines;
using static TorchSharp.torch;

namespace VqDiffusion.Benchmarks;

/// <summary>
/// The matrix products of one transformer forward (every linear layer and both attention products of each block,
/// and the output projection) timed on their own with random operands: the GEMM floor of a step.
/// </summary>
internal static class GemmBenchmark
{
    public static (double Flops, double Seconds, double GflopsPerSecond) Run(VQDiffusionPipeline pipeline, int batch, int repeats)
    {
        var c = pipeline.transformer.Config;
        long n = pipeline.transformer.NumLatentPixels;
        long d = pipeline.transformer.InnerDim;
        long heads = c.NumAttentionHeads;
        long headDim = c.AttentionHeadDim;
        long ctx = pipeline.tokenizer.ModelMaxLength;
        long ctxDim = c.CrossAttentionDim ?? d;
        long ff = d * 4;
        long classes = pipeline.transformer.NumVectorEmbeds - 1;
        long rows = batch * n;

        // (m, k, n, batch count) per product of one block.
        var block = new List<(long M, long K, long N, long Count)>
        {
            (rows, d, d, 3),                 // self-attention q, k, v
            (n, headDim, n, batch * heads),  // self-attention scores
            (n, n, headDim, batch * heads),  // self-attention × v
            (rows, d, d, 1),                 // self-attention out
            (rows, d, d, 1),                 // cross-attention q
            (batch * ctx, ctxDim, d, 2),     // cross-attention k, v
            (n, headDim, ctx, batch * heads),
            (n, ctx, headDim, batch * heads),
            (rows, d, d, 1),                 // cross-attention out
            (rows, d, ff * 2, 1),            // GEGLU projection
            (rows, ff, d, 1),                // feed-forward out
        };
        var all = new List<(long M, long K, long N, long Count)>();
        for (int i = 0; i < c.NumLayers; i++)
        {
            all.AddRange(block);
        }

        all.Add((rows, d, classes, 1));
        double flops = all.Sum(p => 2.0 * p.M * p.K * p.N * p.Count);

        using var noGrad = no_grad();
        var operands = block.Append((rows, d, classes, 1)).Distinct()
            .ToDictionary(p => p, p => (A: randn(p.Count, p.M, p.K), B: randn(p.Count, p.K, p.N)));
        double best = double.MaxValue;
        for (int r = 0; r < repeats + 1; r++)
        {
            var sw = Stopwatch.StartNew();
            foreach (var p in all)
            {
                var (a, b) = operands[p];
                using Tensor result = a.bmm(b);
            }

            if (r > 0)
            {
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
        }

        foreach (var (a, b) in operands.Values)
        {
            a.Dispose();
            b.Dispose();
        }

        return (flops, best, flops / best / 1e9);
    }
}
