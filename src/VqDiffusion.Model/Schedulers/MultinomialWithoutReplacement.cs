using static TorchSharp.torch;

namespace VqDiffusion.Model.Schedulers;

/// <summary>
/// <c>torch.multinomial(p, n, replacement=False)</c> of a 1-D float32 <c>p</c> as libtorch computes it on the CPU
/// without MKL (the build the original VQ-Diffusion results come from): one exponential variate per category,
/// <c>q_j = float32(−log(1 − u_j))</c> with <c>u_j</c> a double uniform (two 32-bit Mersenne-Twister outputs,
/// <c>((r1 &lt;&lt; 32 | r2) &amp; (2^53 − 1)) · 2^−53</c>, i.e. one float64 <c>torch.rand</c> element), then the
/// <paramref name="count"/> largest <c>p_j / q_j</c> (float32). libtorch builds with MKL draw the exponentials
/// differently, so this is implemented here on the run's own generator: a float64 <c>rand</c> of the categories' count
/// consumes exactly the generator outputs the recipe does.
/// </summary>
internal static class MultinomialWithoutReplacement
{
    /// <summary>
    /// The positions picked, in descending order of <c>p/q</c> (only the set matters to the sampler). Throws like
    /// torch for a distribution without mass or more picks than categories.
    /// </summary>
    public static int[] Sample(ReadOnlySpan<float> probabilities, int count, Generator? generator)
    {
        int categories = probabilities.Length;
        if (count < 1 || count > categories)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"cannot sample {count} of {categories} categories without replacement");
        }

        double sum = 0;
        foreach (float p in probabilities)
        {
            if (!float.IsFinite(p) || p < 0)
            {
                throw new ArgumentException("probability tensor contains either inf, nan or element < 0", nameof(probabilities));
            }

            sum += p;
        }

        if (sum <= 0)
        {
            throw new ArgumentException("invalid multinomial distribution (sum of probabilities <= 0)", nameof(probabilities));
        }

        double[] uniforms;
        using (var u = rand([categories], dtype: ScalarType.Float64, device: CPU, generator: generator))
        {
            uniforms = u.data<double>().ToArray();
        }

        var ratios = new float[categories];
        for (int j = 0; j < categories; j++)
        {
            float q = (float)-Math.Log(1.0 - uniforms[j]);
            ratios[j] = probabilities[j] / q;
        }

        // topk: the largest ratios; equal ratios by position.
        int[] order = Enumerable.Range(0, categories).ToArray();
        Array.Sort(order, (a, b) =>
        {
            int byRatio = ratios[b].CompareTo(ratios[a]);
            return byRatio != 0 ? byRatio : a.CompareTo(b);
        });
        return order[..count];
    }
}
