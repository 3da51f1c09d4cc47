using VqDiffusion.Model.Hub;
using VqDiffusion.Model.Loading;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Model.Tests.Hub;

/// <summary>Hub ids resolved against a Hub stand-in on 127.0.0.1, into huggingface_hub's cache layout.</summary>
public sealed class ModelResolverTests : IAsyncLifetime
{
    private readonly string _cache = Path.Combine(Path.GetTempPath(), "vqd-hub-" + Guid.NewGuid().ToString("N"));
    private FakeHubServer _hub = null!;

    public async Task InitializeAsync() => _hub = await TinyHubRepo.StartAsync();

    public async Task DisposeAsync()
    {
        await _hub.DisposeAsync();
        if (Directory.Exists(_cache))
        {
            Directory.Delete(_cache, recursive: true);
        }
    }

    private HubOptions Options(bool offline = false, string? token = null) =>
        new() { CacheDir = _cache, Endpoint = _hub.Endpoint, Offline = offline, Token = token, Timeout = TimeSpan.FromSeconds(20) };

    private string Repo => Path.Combine(_cache, "models--test-org--tiny-ithq");

    private Task<ResolvedModel> Resolve(string id, HubOptions? options = null, IProgress<HubDownloadProgress>? progress = null) =>
        ModelResolver.ResolveAsync(id, null, options ?? Options(), progress);

    private List<FakeHubRequest> Requests() => [.. _hub.Requests];

    [Fact]
    public async Task TheFirstResolveFillsTheCacheInHuggingfaceHubsLayoutWithOnlyThePipelinesFiles()
    {
        var reports = new List<HubDownloadProgress>();
        ResolvedModel model = await Resolve(TinyHubRepo.RepoId, progress: new SyncProgress(reports));

        string snapshot = Path.Combine(Repo, "snapshots", TinyHubRepo.MainCommit);
        Assert.Equal(snapshot, model.LocalPath);
        Assert.Equal((TinyHubRepo.RepoId, TinyHubRepo.MainCommit), (model.Name, model.CommitHash));
        Assert.Equal(TinyHubRepo.MainCommit, File.ReadAllText(Path.Combine(Repo, "refs", "main")));

        Dictionary<string, byte[]> source = TinyHubRepo.MainFiles();
        var expected = source.Keys.Where(k => k != TinyHubRepo.TransformerBin && k != "README.md" && k != ".gitattributes").Order(StringComparer.Ordinal).ToList();
        var cached = Directory.EnumerateFiles(snapshot, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(snapshot, f).Replace('\\', '/')).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, cached); // safetensors preferred: the transformer's .bin is not fetched, nor README/.gitattributes

        foreach (string file in expected)
        {
            string pointer = Path.Combine(snapshot, file);
            string etag = FakeHubServer.EtagOf(file, source[file]);
            int depth = file.Count(c => c == '/');
            string relative = string.Concat(Enumerable.Repeat("../", depth + 2)) + "blobs/" + etag;
            Assert.Equal(relative, new FileInfo(pointer).LinkTarget); // relative symlink, as huggingface_hub makes
            Assert.Equal(source[file], File.ReadAllBytes(Path.Combine(Repo, "blobs", etag)));
        }

        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Repo, "blobs"), "*.incomplete"));
        Assert.Contains(reports, r => r.RepoPath == TinyHubRepo.TransformerSafetensors && r.Completed && r.BytesDone == source[TinyHubRepo.TransformerSafetensors].Length);
        Assert.All(reports, r => Assert.InRange(r.FileNumber, 1, r.FileCount));
        Assert.DoesNotContain(Requests(), r => r.Path.EndsWith(TinyHubRepo.TransformerBin, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ASecondResolveUsesTheCacheABranchAsksOnlyForItsCommitAndACommitAsksNothing()
    {
        await Resolve(TinyHubRepo.RepoId);
        int before = _hub.Requests.Count;

        ResolvedModel again = await Resolve(TinyHubRepo.RepoId);
        var branch = Requests().Skip(before).ToList();
        Assert.Equal(Path.Combine(Repo, "snapshots", TinyHubRepo.MainCommit), again.LocalPath);
        Assert.Equal(new[] { $"GET /api/models/{TinyHubRepo.RepoId}/revision/main" }, branch.Select(r => $"{r.Method} {r.Path}"));

        before = _hub.Requests.Count;
        ResolvedModel byCommit = await Resolve($"{TinyHubRepo.RepoId}@{TinyHubRepo.MainCommit}");
        Assert.Equal(again.LocalPath, byCommit.LocalPath);
        Assert.Equal(before, _hub.Requests.Count);
    }

    [Fact]
    public async Task OfflineModeNeverTouchesTheNetwork()
    {
        ModelLoadException missing = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId, Options(offline: true)));
        Assert.Contains("not in the cache", missing.Message);
        Assert.Contains("HF_HUB_OFFLINE", missing.Message);
        Assert.Empty(_hub.Requests);

        ResolvedModel online = await Resolve(TinyHubRepo.RepoId);
        int before = _hub.Requests.Count;
        ResolvedModel offline = await Resolve(TinyHubRepo.RepoId, Options(offline: true));
        Assert.Equal(online.LocalPath, offline.LocalPath);
        Assert.Equal(TinyHubRepo.MainCommit, offline.CommitHash);
        Assert.Equal(before, _hub.Requests.Count);

        // A revision that was never fetched is not guessed from another one.
        ModelLoadException v2 = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId + "@v2", Options(offline: true)));
        Assert.Contains("revision 'v2' is not in the cache", v2.Message);
        Assert.Equal(before, _hub.Requests.Count);
    }

    [Fact]
    public async Task ABranchRevisionAndACommitRevisionResolveToTheirSnapshots()
    {
        ResolvedModel v2 = await Resolve(TinyHubRepo.RepoId + "@v2");
        Assert.Equal(Path.Combine(Repo, "snapshots", TinyHubRepo.V2Commit), v2.LocalPath);
        Assert.Equal(TinyHubRepo.V2Commit, File.ReadAllText(Path.Combine(Repo, "refs", "v2")));
        Assert.False(File.Exists(Path.Combine(Repo, "refs", "main")));
        Assert.True(File.Exists(Path.Combine(v2.LocalPath, "transformer", "diffusion_pytorch_model.bin"))); // v2 has no safetensors
        Assert.False(File.Exists(Path.Combine(v2.LocalPath, "transformer", "diffusion_pytorch_model.safetensors")));

        ResolvedModel commit = await Resolve($"{TinyHubRepo.RepoId}@{TinyHubRepo.MainCommit}");
        Assert.Equal(Path.Combine(Repo, "snapshots", TinyHubRepo.MainCommit), commit.LocalPath);
        Assert.Equal(new[] { "v2" }, Directory.GetFiles(Path.Combine(Repo, "refs")).Select(Path.GetFileName)); // a commit writes no ref
        Assert.Contains(Requests(), r => r.Path == $"/api/models/{TinyHubRepo.RepoId}/revision/{TinyHubRepo.MainCommit}");

        // The blobs both revisions share were downloaded once.
        int configGets = Requests().Count(r => r.Method == "GET" && r.Path.EndsWith("/vqvae/config.json", StringComparison.Ordinal));
        Assert.Equal(1, configGets);
    }

    [Fact]
    public async Task ADroppedConnectionIsResumedWithARangeRequest()
    {
        byte[] weights = TinyHubRepo.MainFiles()[TinyHubRepo.TransformerSafetensors];
        _hub.DropOnce(TinyHubRepo.TransformerSafetensors, weights.Length / 3);
        ResolvedModel model = await Resolve(TinyHubRepo.RepoId);

        var gets = Requests().Where(r => r.Port == "cdn" && r.Path.EndsWith(TinyHubRepo.TransformerSafetensors, StringComparison.Ordinal)).ToList();
        Assert.Equal(2, gets.Count);
        Assert.Null(gets[0].Range);
        Assert.Equal($"bytes={weights.Length / 3}-", gets[1].Range);
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(model.LocalPath, "transformer", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public async Task AnIncompleteBlobLeftByAnEarlierRunIsResumed()
    {
        byte[] weights = TinyHubRepo.MainFiles()["vqvae/diffusion_pytorch_model.safetensors"];
        string etag = FakeHubServer.Sha256(weights);
        Directory.CreateDirectory(Path.Combine(Repo, "blobs"));
        int half = weights.Length / 2;
        File.WriteAllBytes(Path.Combine(Repo, "blobs", etag + ".incomplete"), weights[..half]);

        var reports = new List<HubDownloadProgress>();
        ResolvedModel model = await Resolve(TinyHubRepo.RepoId, progress: new SyncProgress(reports));

        var gets = Requests().Where(r => r.Port == "cdn" && r.Path.EndsWith("vqvae/diffusion_pytorch_model.safetensors", StringComparison.Ordinal)).ToList();
        Assert.Equal(new string?[] { $"bytes={half}-" }, gets.Select(g => g.Range));
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(model.LocalPath, "vqvae", "diffusion_pytorch_model.safetensors")));
        Assert.False(File.Exists(Path.Combine(Repo, "blobs", etag + ".incomplete")));
        Assert.Equal(half, reports.First(r => r.RepoPath == "vqvae/diffusion_pytorch_model.safetensors").BytesDone);
    }

    [Fact]
    public async Task ACorruptedDownloadFailsNamingTheFileAndLeavesNoSnapshot()
    {
        _hub.Corrupt[TinyHubRepo.TransformerSafetensors] = true;
        ModelLoadException ex = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId));
        Assert.Contains(TinyHubRepo.TransformerSafetensors, ex.Message);
        Assert.Contains("sha256", ex.Message);
        Assert.Contains("corrupted", ex.Message);
        Assert.False(Directory.Exists(Path.Combine(Repo, "snapshots", TinyHubRepo.MainCommit)));
        Assert.False(File.Exists(Path.Combine(Repo, "refs", "main")));
        string etag = FakeHubServer.Sha256(TinyHubRepo.MainFiles()[TinyHubRepo.TransformerSafetensors]);
        Assert.False(File.Exists(Path.Combine(Repo, "blobs", etag)));
        Assert.False(File.Exists(Path.Combine(Repo, "blobs", etag + ".incomplete")));

        // A corrupted small file (checked against its git blob id) fails the same way.
        _hub.Corrupt.Clear();
        _hub.Corrupt["vqvae/config.json"] = true;
        ModelLoadException config = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId));
        Assert.Contains("vqvae/config.json", config.Message);
        Assert.Contains("git blob id", config.Message);

        // Once the Hub serves the right bytes, the next resolve completes (what was verified is kept).
        _hub.Corrupt.Clear();
        ResolvedModel model = await Resolve(TinyHubRepo.RepoId);
        Assert.True(File.Exists(Path.Combine(model.LocalPath, "transformer", "diffusion_pytorch_model.safetensors")));
    }

    [Fact]
    public async Task AGatedRepositoryNeedsATokenThatIsNeverSentToTheCdn()
    {
        _hub.RequiredToken = "hf_test_token";
        ModelLoadException ex = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId));
        Assert.Contains("HTTP 401", ex.Message);
        Assert.Contains("needs a token (HF_TOKEN)", ex.Message);

        ModelLoadException wrong = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId, Options(token: "hf_wrong")));
        Assert.Contains("the token (HF_TOKEN) was refused", wrong.Message);
        Assert.DoesNotContain("hf_wrong", wrong.Message);

        ResolvedModel model = await Resolve(TinyHubRepo.RepoId, Options(token: "hf_test_token"));
        Assert.True(Directory.Exists(model.LocalPath));
        Assert.Contains(Requests(), r => r.Port == "hub" && r.Authorization == "Bearer hf_test_token");
        Assert.Contains(Requests(), r => r.Port == "cdn");
        Assert.All(Requests().Where(r => r.Port == "cdn"), r => Assert.Null(r.Authorization));
    }

    [Fact]
    public async Task MissingRepositoriesRevisionsAndFilesAreNamedWithTheirHttpStatus()
    {
        ModelLoadException repo = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve("test-org/no-such-model"));
        Assert.Contains("HTTP 404", repo.Message);
        Assert.Contains("repository not found", repo.Message);

        ModelLoadException revision = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId + "@no-such-branch"));
        Assert.Contains("HTTP 404", revision.Message);
        Assert.Contains("revision 'no-such-branch' not found", revision.Message);

        _hub.MissingOnResolve["scheduler/scheduler_config.json"] = true;
        ModelLoadException file = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId));
        Assert.Contains("HTTP 404", file.Message);
        Assert.Contains("file 'scheduler/scheduler_config.json'", file.Message);
        Assert.False(Directory.Exists(Path.Combine(Repo, "snapshots")));
    }

    [Fact]
    public async Task ARepositoryWithoutAFileThePipelineNeedsIsRejectedByName()
    {
        Dictionary<string, byte[]> files = TinyHubRepo.MainFiles();
        files.Remove("vqvae/config.json");
        _hub.AddRevision("test-org/broken", "main", "1111111111111111111111111111111111111111", files);
        ModelLoadException ex = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve("test-org/broken"));
        Assert.Contains("'vqvae/config.json' is missing", ex.Message);

        files = TinyHubRepo.MainFiles();
        files.Remove("text_encoder/model.safetensors");
        _hub.AddRevision("test-org/no-weights", "main", "2222222222222222222222222222222222222222", files);
        ModelLoadException weights = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve("test-org/no-weights"));
        Assert.Contains("'text_encoder': no weights file found", weights.Message);
    }

    [Fact]
    public async Task AnUnreachableHubFallsBackToACompleteCachedSnapshot()
    {
        ResolvedModel online = await Resolve(TinyHubRepo.RepoId);
        var unreachable = Options() with { Endpoint = "http://127.0.0.1:1" };
        ResolvedModel fallback = await Resolve(TinyHubRepo.RepoId, unreachable);
        Assert.Equal(online.LocalPath, fallback.LocalPath);

        ModelLoadException ex = await Assert.ThrowsAsync<ModelLoadException>(() => Resolve(TinyHubRepo.RepoId + "@v2", unreachable));
        Assert.Contains("cannot be reached", ex.Message);
    }

    [Fact]
    public async Task AnExistingFolderIsNeverTakenForAHubId()
    {
        ResolvedModel model = await Resolve(Fixtures.TinyModel);
        Assert.Equal((Fixtures.TinyModel, "tiny-ithq", false), (model.LocalPath, model.Name, model.IsHubModel));
        Assert.Empty(_hub.Requests);
    }

    /// <summary>Records reports synchronously (Progress&lt;T&gt; would post them later).</summary>
    private sealed class SyncProgress(List<HubDownloadProgress> reports) : IProgress<HubDownloadProgress>
    {
        public void Report(HubDownloadProgress value)
        {
            lock (reports)
            {
                reports.Add(value);
            }
        }
    }
}
