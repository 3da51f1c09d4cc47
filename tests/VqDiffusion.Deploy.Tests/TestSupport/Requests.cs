using VqDiffusion.Grpc.V1;

namespace VqDiffusion.Deploy.Tests.TestSupport;

public static class Requests
{
    /// <summary>A short request: 10 steps, two prompts, a token snapshot every 5 steps.</summary>
    public static GenerateRequest Short(string id, ulong seed) => new()
    {
        RequestId = id,
        Prompts = { "a photo of a cat", "a red car" },
        NumInferenceSteps = 10,
        Seed = seed,
        Snapshots = new SnapshotOptions { EveryNSteps = 5, IncludeTokens = true },
    };

    /// <summary>
    /// A long request: 40 steps, the token grid after every step (40 more messages). In flight long enough to kill
    /// or drain its replica right after its first progress event, cheap enough for a loaded machine.
    /// </summary>
    public static GenerateRequest Long(string id, ulong seed) => new()
    {
        RequestId = id,
        Prompts = { "a photo of a cat" },
        NumInferenceSteps = 40,
        Seed = seed,
        Snapshots = new SnapshotOptions { EveryNSteps = 1, IncludeTokens = true },
    };
}
