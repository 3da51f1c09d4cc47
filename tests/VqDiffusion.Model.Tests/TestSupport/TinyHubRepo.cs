namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>
/// The shipped tiny pipeline as a Hub repository on a <see cref="FakeHubServer"/>: <c>main</c> = every file of
/// models/tiny-ithq plus a README and .gitattributes (not needed by the pipeline); branch <c>v2</c> = another commit
/// without the transformer's safetensors file (so its <c>.bin</c> is the weights to fetch).
/// </summary>
public static class TinyHubRepo
{
    public const string RepoId = "test-org/tiny-ithq";
    public const string MainCommit = "0123456789abcdef0123456789abcdef01234567";
    public const string V2Commit = "fedcba9876543210fedcba9876543210fedcba98";
    public const string TransformerSafetensors = "transformer/diffusion_pytorch_model.safetensors";
    public const string TransformerBin = "transformer/diffusion_pytorch_model.bin";

    public static Dictionary<string, byte[]> MainFiles()
    {
        Dictionary<string, byte[]> files = FakeHubServer.ReadFolder(Fixtures.TinyModel);
        files["README.md"] = "# tiny-ithq\n"u8.ToArray();
        files[".gitattributes"] = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"u8.ToArray();
        return files;
    }

    public static async Task<FakeHubServer> StartAsync()
    {
        FakeHubServer hub = await FakeHubServer.StartAsync().ConfigureAwait(false);
        hub.AddRevision(RepoId, "main", MainCommit, MainFiles());
        Dictionary<string, byte[]> v2 = MainFiles();
        v2.Remove(TransformerSafetensors);
        hub.AddRevision(RepoId, "v2", V2Commit, v2);
        return hub;
    }
}
