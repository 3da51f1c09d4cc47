using TorchSharp;
using VqDiffusion.Model.Pipelines.Samplers;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>Records what a run's sampler computes (network inputs, posteriors, multinomial picks) for the golden comparisons.</summary>
internal sealed class RecordingTrace : ISamplingTrace, IDisposable
{
    public sealed record Call(int Step, long[] Tokens, long Timestep, bool Unconditional);

    public sealed record Pick(int Step, int Row, float[] Scores, int Count, int[] Selected);

    public sealed record PosteriorCall(int Step, long Timestep, torch.Tensor LogXStart, torch.Tensor XT, torch.Tensor Output) : IDisposable
    {
        public void Dispose()
        {
            LogXStart.Dispose();
            XT.Dispose();
            Output.Dispose();
        }
    }

    public List<Call> Calls { get; } = [];

    public List<Pick> Picks { get; } = [];

    /// <summary>The first and the latest posterior.</summary>
    public PosteriorCall? FirstPosterior { get; private set; }

    public PosteriorCall? LastPosterior { get; private set; }

    /// <summary>The encoder states of the first conditional and unconditional forwards.</summary>
    public torch.Tensor? CondEmbeddings { get; private set; }

    public torch.Tensor? UncondEmbeddings { get; private set; }

    public void NetworkCall(int step, torch.Tensor tokens, long timestep, bool unconditional, torch.Tensor embeddings)
    {
        using var cpu = tokens.cpu().contiguous();
        Calls.Add(new Call(step, cpu.data<long>().ToArray(), timestep, unconditional));
        if (unconditional)
        {
            UncondEmbeddings ??= Keep(embeddings.detach().cpu().clone());
        }
        else
        {
            CondEmbeddings ??= Keep(embeddings.detach().cpu().clone());
        }
    }

    public void Posterior(int step, long timestep, torch.Tensor logXStart, torch.Tensor xT, torch.Tensor output)
    {
        var call = new PosteriorCall(step, timestep, Keep(logXStart.detach().cpu().clone()), Keep(xT.cpu().clone()), Keep(output.detach().cpu().clone()));
        if (FirstPosterior is null)
        {
            FirstPosterior = call;
            return;
        }

        LastPosterior?.Dispose();
        LastPosterior = call;
    }

    public void Multinomial(int step, int row, float[] scores, int count, int[] selected) => Picks.Add(new Pick(step, row, scores, count, selected));

    /// <summary>A copy that outlives the step's dispose scope.</summary>
    private static torch.Tensor Keep(torch.Tensor copy) => copy.DetachFromDisposeScope();

    public void Dispose()
    {
        FirstPosterior?.Dispose();
        LastPosterior?.Dispose();
        CondEmbeddings?.Dispose();
        UncondEmbeddings?.Dispose();
    }
}
