using System.Diagnostics;
using static TorchSharp.torch;

namespace VqDiffusion.Benchmarks;

/// <summary>Times the single tensor operations of a step's non-transformer phases on [1, K, N] log-probs.</summary>
internal static class MicroBenchmark
{
    public static int Run(int classes, int pixels)
    {
        using var noGrad = no_grad();
        var g = new Generator(0, CPU);
        using Tensor logP = (randn([1, classes, pixels], generator: g) * 3).log_softmax(1);
        using Tensor logits64 = randn([2, pixels, classes], generator: g).to(ScalarType.Float64);
        void Time(string name, Func<Tensor> op)
        {
            op().Dispose();
            var sw = Stopwatch.StartNew();
            const int n = 5;
            for (int i = 0; i < n; i++)
            {
                using var scope = NewDisposeScope();
                op();
            }

            Console.WriteLine($"| {name} | {sw.Elapsed.TotalMilliseconds / n:F1} ms |");
        }

        using Tensor rows = logP.transpose(1, 2).contiguous();
        var (sorted, idx) = rows.sort(-1, descending: true);
        Console.WriteLine($"| op on [1, {classes}, {pixels}] | time |");
        Console.WriteLine("|---|---|");
        Time("transpose copy", () => logP.transpose(1, 2).contiguous());
        Time("sort rows (contiguous), descending", () => rows.sort(-1, descending: true).Values);
        Time("sort rows, stable", () => rows.sort(-1, descending: true, stable: true).Values);
        Time("sort dim 1 (strided), descending", () => logP.sort(1, descending: true).Values);
        using Tensor keys = randint(0, 1L << 50, [rows.numel()], dtype: ScalarType.Int64, generator: g);
        Time("sort 1-D int64 keys (ascending)", () => keys.sort(0).Values);
        Time("sort 1-D int64 keys (stable)", () => keys.sort(0, stable: true).Values);
        Time("exp", () => sorted.exp());
        Time("cumsum rows", () => sorted.cumsum(-1));
        Time("lt", () => sorted.lt(0.5f));
        Time("scatter rows", () => empty_like(rows).scatter_(-1, idx, sorted));
        Time("argsort dim 1", () => logP.argsort(1));
        Time("topk 64 rows", () => rows.topk(64, -1).values);
        Time("logsumexp dim 1", () => logP.logsumexp(1, keepdim: true));
        Time("logaddexp", () => logP.logaddexp(logP));
        Time("log", () => logP.abs().log());
        Time("add", () => logP + logP);
        Time("rand (generator)", () => rand(logP.shape, generator: g));
        Time("argmax dim 1", () => logP.argmax(1));
        Time("one_hot int64 + permute + float + clamp + log", () => nn.functional.one_hot(logP.argmax(1), classes).permute(0, 2, 1).to(ScalarType.Float32).clamp(min: 1e-30).log());
        Time("log_softmax float64 rows [2,N,K]", () => logits64.log_softmax(-1));
        Time("log_softmax float64 dim1 of permuted [2,K,N]", () => logits64.permute(0, 2, 1).log_softmax(1));
        Time("log_softmax float32 rows [2,N,K]", () => logits64.to(ScalarType.Float32).log_softmax(-1));
        Time("to float64", () => logP.to(ScalarType.Float64));
        sorted.Dispose();
        idx.Dispose();
        return 0;
    }
}
