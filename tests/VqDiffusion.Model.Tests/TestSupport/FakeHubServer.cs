using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>
/// A Hugging Face Hub stand-in on 127.0.0.1 (Kestrel, two ports): the Hub's revision API
/// (<c>GET /api/models/{repo}/revision/{rev}</c>), <c>HEAD/GET /{repo}/resolve/{rev}/{path}</c> with <c>X-Repo-Commit</c>
/// and <c>ETag</c> (the git blob id) for plain files, and for LFS files (<c>.safetensors</c>, <c>.bin</c>) a 302 to a
/// "CDN" on the second port with <c>X-Linked-Etag</c> (the sha256) and <c>X-Linked-Size</c>, as huggingface.co answers.
/// Range requests are served (206); faults can be injected: drop the connection once mid-file, corrupt a file, require
/// a token, hide a file from resolve. Every request is recorded.
/// </summary>
public sealed class FakeHubServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Dictionary<string, Dictionary<string, FakeRevision>> _repos = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _dropOnce = new(StringComparer.Ordinal);
    private int _hubPort;
    private int _cdnPort;

    private FakeHubServer(WebApplication app) => _app = app;

    /// <summary>Every request: method, path, port role ("hub" or "cdn"), Range and Authorization headers.</summary>
    public ConcurrentQueue<FakeHubRequest> Requests { get; } = new();

    public string Endpoint => $"http://127.0.0.1:{_hubPort}";

    /// <summary>When set, the API and resolve answer 401 without <c>authorization: Bearer {RequiredToken}</c>.</summary>
    public string? RequiredToken { get; set; }

    /// <summary>Files (repository paths) whose served bytes are altered (one byte flipped) while the headers stay right.</summary>
    public ConcurrentDictionary<string, bool> Corrupt { get; } = new(StringComparer.Ordinal);

    /// <summary>Files the revision API lists but resolve answers 404 for (EntryNotFound).</summary>
    public ConcurrentDictionary<string, bool> MissingOnResolve { get; } = new(StringComparer.Ordinal);

    /// <summary>The next download of <paramref name="repoPath"/> sends <paramref name="bytes"/> bytes, then drops the connection.</summary>
    public void DropOnce(string repoPath, int bytes) => _dropOnce[repoPath] = bytes;

    public static string Sha256(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    /// <summary>git's blob id: sha1("blob {size}\0" + content).</summary>
    public static string GitBlobId(byte[] data) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {data.Length}\0"), .. data]));

    public static bool IsLfs(string path) => path.EndsWith(".safetensors", StringComparison.Ordinal) || path.EndsWith(".bin", StringComparison.Ordinal);

    /// <summary>The ETag huggingface_hub names the blob by: sha256 for LFS files, the git blob id otherwise.</summary>
    public static string EtagOf(string path, byte[] data) => IsLfs(path) ? Sha256(data) : GitBlobId(data);

    /// <summary>A folder's files by repository path (<c>/</c> separators).</summary>
    public static Dictionary<string, byte[]> ReadFolder(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f).Replace(Path.DirectorySeparatorChar, '/'), File.ReadAllBytes, StringComparer.Ordinal);

    /// <summary>Adds a revision (a branch or tag name, or null for the commit only) of a repository.</summary>
    public void AddRevision(string repoId, string? name, string commit, IReadOnlyDictionary<string, byte[]> files)
    {
        lock (_repos)
        {
            if (!_repos.TryGetValue(repoId, out var revisions))
            {
                _repos[repoId] = revisions = new Dictionary<string, FakeRevision>(StringComparer.Ordinal);
            }

            var revision = new FakeRevision(commit, files);
            revisions[commit] = revision;
            if (name is not null)
            {
                revisions[name] = revision;
            }
        }
    }

    public static async Task<FakeHubServer> StartAsync()
    {
        // Its own content root: no appsettings.json of a test project (the gRPC server's makes endpoints HTTP/2-only).
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = Path.GetTempPath(), Args = [] });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1AndHttp2); // the Hub
            kestrel.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1AndHttp2); // its "CDN" for LFS files
        });
        WebApplication app = builder.Build();
        var server = new FakeHubServer(app);
        app.Run(server.HandleAsync);
        await app.StartAsync().ConfigureAwait(false);
        var ports = app.Urls.Select(u => new Uri(u).Port).ToArray();
        server._hubPort = ports[0];
        server._cdnPort = ports[1];
        return server;
    }

    private async Task HandleAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        bool cdn = context.Connection.LocalPort == _cdnPort;
        string path = Uri.UnescapeDataString(request.Path.Value ?? string.Empty);
        Requests.Enqueue(new FakeHubRequest(request.Method, path, cdn ? "cdn" : "hub", request.Headers.Range.ToString() is { Length: > 0 } r ? r : null, request.Headers.Authorization.ToString() is { Length: > 0 } a ? a : null));
        HttpResponse response = context.Response;
        if (cdn)
        {
            // /cdn/{repo path}?sha=...: the CDN needs no token (huggingface_hub must not send it there).
            string repoPath = path["/cdn/".Length..];
            string sha = request.Query["sha"].ToString();
            FakeRevision? owner;
            lock (_repos)
            {
                owner = _repos.Values.SelectMany(r => r.Values).FirstOrDefault(r => r.Files.TryGetValue(repoPath, out var d) && Sha256(d) == sha);
            }

            if (owner is null)
            {
                response.StatusCode = 404;
                return;
            }

            await ServeBytesAsync(context, repoPath, owner.Files[repoPath]).ConfigureAwait(false);
            return;
        }

        if (RequiredToken is { } token && request.Headers.Authorization.ToString() != "Bearer " + token)
        {
            response.StatusCode = 401;
            await response.WriteAsync("Invalid username or password.").ConfigureAwait(false);
            return;
        }

        if (path.StartsWith("/api/models/", StringComparison.Ordinal) && path.Contains("/revision/", StringComparison.Ordinal))
        {
            string rest = path["/api/models/".Length..];
            int at = rest.IndexOf("/revision/", StringComparison.Ordinal);
            string repoId = rest[..at];
            string rev = rest[(at + "/revision/".Length)..];
            if (Find(repoId, rev, response) is not { } revision)
            {
                return;
            }

            response.ContentType = "application/json";
            await response.WriteAsync(JsonSerializer.Serialize(new
            {
                id = repoId,
                sha = revision.Commit,
                siblings = revision.Files.Keys.Order(StringComparer.Ordinal).Select(f => new { rfilename = f }),
            })).ConfigureAwait(false);
            return;
        }

        int resolve = path.IndexOf("/resolve/", StringComparison.Ordinal);
        if (resolve > 0)
        {
            string repoId = path[1..resolve];
            string[] parts = path[(resolve + "/resolve/".Length)..].Split('/', 2);
            if (parts.Length != 2 || Find(repoId, parts[0], response) is not { } revision)
            {
                return;
            }

            string repoPath = parts[1];
            if (!revision.Files.TryGetValue(repoPath, out byte[]? data) || MissingOnResolve.ContainsKey(repoPath))
            {
                response.StatusCode = 404;
                response.Headers["X-Error-Code"] = "EntryNotFound";
                response.Headers["X-Error-Message"] = "Entry not found";
                return;
            }

            response.Headers["X-Repo-Commit"] = revision.Commit;
            if (IsLfs(repoPath))
            {
                string sha = Sha256(data);
                response.StatusCode = 302;
                response.Headers.ETag = $"\"{GitBlobId(Encoding.ASCII.GetBytes("version https://git-lfs.github.com/spec/v1\noid sha256:" + sha))}\"";
                response.Headers["X-Linked-Etag"] = $"\"{sha}\"";
                response.Headers["X-Linked-Size"] = data.Length.ToString(CultureInfo.InvariantCulture);
                response.Headers.Location = $"http://127.0.0.1:{_cdnPort}/cdn/{Uri.EscapeDataString(repoPath)}?sha={sha}";
                return;
            }

            response.Headers.ETag = $"\"{GitBlobId(data)}\"";
            await ServeBytesAsync(context, repoPath, data).ConfigureAwait(false);
            return;
        }

        response.StatusCode = 404;
    }

    private FakeRevision? Find(string repoId, string revision, HttpResponse response)
    {
        lock (_repos)
        {
            if (!_repos.TryGetValue(repoId, out var revisions))
            {
                response.StatusCode = 404;
                response.Headers["X-Error-Code"] = "RepoNotFound";
                return null;
            }

            if (!revisions.TryGetValue(revision, out var found))
            {
                response.StatusCode = 404;
                response.Headers["X-Error-Code"] = "RevisionNotFound";
                response.Headers["X-Error-Message"] = $"Invalid rev id: {revision}";
                return null;
            }

            return found;
        }
    }

    private async Task ServeBytesAsync(HttpContext context, string repoPath, byte[] data)
    {
        HttpResponse response = context.Response;
        if (Corrupt.ContainsKey(repoPath))
        {
            data = (byte[])data.Clone();
            data[data.Length / 2] ^= 0x5A;
        }

        long start = 0;
        string range = context.Request.Headers.Range.ToString();
        if (range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            start = long.Parse(range["bytes=".Length..^1], CultureInfo.InvariantCulture);
            if (start >= data.Length)
            {
                response.StatusCode = 416;
                response.Headers.ContentRange = $"bytes */{data.Length}";
                return;
            }

            response.StatusCode = 206;
            response.Headers.ContentRange = $"bytes {start}-{data.Length - 1}/{data.Length}";
        }

        response.ContentLength = data.Length - start;
        if (HttpMethods.IsHead(context.Request.Method))
        {
            return;
        }

        if (_dropOnce.TryRemove(repoPath, out int drop))
        {
            await response.Body.WriteAsync(data.AsMemory((int)start, drop)).ConfigureAwait(false);
            await response.Body.FlushAsync().ConfigureAwait(false);
            context.Abort();
            return;
        }

        await response.Body.WriteAsync(data.AsMemory((int)start)).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    private sealed record FakeRevision(string Commit, IReadOnlyDictionary<string, byte[]> Files);
}
