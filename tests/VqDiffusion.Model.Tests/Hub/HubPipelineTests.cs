using System.Security.Cryptography;
using VqDiffusion.Model.Hub;
using VqDiffusion.Model.Pipelines;
using VqDiffusion.Model.Tests.TestSupport;

namespace VqDiffusion.Model.Tests.Hub;

/// <summary>The pipeline loaded from a resolved cache snapshot is the pipeline of the folder.</summary>
public sealed class HubPipelineTests : IDisposable
{
    private readonly string _cache = Path.Combine(Path.GetTempPath(), "vqd-hub-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_cache))
        {
            Directory.Delete(_cache, recursive: true);
        }
    }

    private static readonly GenerationRequest Request = new()
    {
        Prompts = ["a photo of a cat", "a red car"],
        NumInferenceSteps = 4,
        GuidanceScale = 3f,
        TruncationRate = 0.9f,
        Seed = 7,
    };

    private static byte[] Pixels(string folder)
    {
        using var pipeline = VQDiffusionPipeline.FromPretrained(folder);
        return pipeline.Generate(Request).Images.SelectMany(i => i.Rgb).ToArray();
    }

    [Fact]
    public async Task ADownloadedSnapshotGeneratesTheFoldersImages()
    {
        await using FakeHubServer hub = await TinyHubRepo.StartAsync();
        var options = new HubOptions { CacheDir = _cache, Endpoint = hub.Endpoint };
        ResolvedModel main = await ModelResolver.ResolveAsync(TinyHubRepo.RepoId, null, options);
        ResolvedModel v2 = await ModelResolver.ResolveAsync(TinyHubRepo.RepoId + "@v2", null, options);

        byte[] expected = Pixels(Fixtures.TinyModel);
        Assert.Equal(expected, Pixels(main.LocalPath));
        Assert.Equal(expected, Pixels(v2.LocalPath)); // the .bin weights of v2 are the same tensors
    }

    /// <summary>
    /// A cache laid out by hand exactly as huggingface_hub (Python) writes it — blobs named by sha256 / git blob id,
    /// relative symlinks in snapshots/{commit}, refs/main — is used as it is, offline.
    /// </summary>
    [Fact]
    public async Task ACacheFilledByPythonIsUsedAsIs()
    {
        const string commit = "5f3c9e2a1b0d4c6e8f7a9b1c3d5e7f9a0b2c4d6e";
        string repo = Path.Combine(_cache, "models--microsoft--vq-diffusion-ithq");
        Directory.CreateDirectory(Path.Combine(repo, "blobs"));
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), commit); // no newline, as huggingface_hub writes it
        foreach (var (path, data) in FakeHubServer.ReadFolder(Fixtures.TinyModel))
        {
            if (path == TinyHubRepo.TransformerBin)
            {
                continue; // Python's diffusers fetches the safetensors only, too
            }

            string etag = FakeHubServer.EtagOf(path, data);
            File.WriteAllBytes(Path.Combine(repo, "blobs", etag), data);
            string pointer = Path.Combine(repo, "snapshots", commit, path);
            Directory.CreateDirectory(Path.GetDirectoryName(pointer)!);
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(Path.GetDirectoryName(pointer)!, Path.Combine(repo, "blobs", etag)));
        }

        // A .no_exist marker and a lock folder, as Python leaves them, change nothing.
        Directory.CreateDirectory(Path.Combine(repo, ".no_exist", commit));
        File.WriteAllBytes(Path.Combine(repo, ".no_exist", commit, "model_index.fp16.json"), []);
        Directory.CreateDirectory(Path.Combine(_cache, ".locks", "models--microsoft--vq-diffusion-ithq"));

        var offline = new HubOptions { CacheDir = _cache, Endpoint = "http://127.0.0.1:1", Offline = true };
        ResolvedModel model = await ModelResolver.ResolveAsync("microsoft/vq-diffusion-ithq", null, offline);
        Assert.Equal(Path.Combine(repo, "snapshots", commit), model.LocalPath);
        Assert.Equal(("microsoft/vq-diffusion-ithq", commit), (model.Name, model.CommitHash));
        Assert.Equal(Pixels(Fixtures.TinyModel), Pixels(model.LocalPath));

        // Read back through the same layout: every pointer resolves to the blob named by its hash.
        foreach (string pointer in Directory.EnumerateFiles(model.LocalPath, "*", SearchOption.AllDirectories))
        {
            FileSystemInfo target = File.ResolveLinkTarget(pointer, returnFinalTarget: true)!;
            byte[] bytes = File.ReadAllBytes(target.FullName);
            string name = Path.GetFileName(target.FullName);
            Assert.True(name == Convert.ToHexStringLower(SHA256.HashData(bytes)) || name == FakeHubServer.GitBlobId(bytes), pointer);
        }
    }
}
