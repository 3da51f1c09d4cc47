using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using VqDiffusion.Model.Loading;

namespace VqDiffusion.Model.Hub;

/// <summary>
/// The Hub's HTTP API as huggingface_hub calls it: <c>GET {endpoint}/api/models/{repo}/revision/{revision}</c> (commit
/// and file list), <c>HEAD {endpoint}/{repo}/resolve/{revision}/{path}</c> (file metadata, relative redirects
/// followed, an absolute one read as the download location) and the download itself (resumed with
/// <c>Range: bytes=N-</c>, the token sent to the endpoint's host only, sizes and hashes checked).
/// </summary>
public sealed class HubClient : IDisposable
{
    private const int MaxRedirects = 10;
    private readonly HubOptions _options;
    private readonly HttpClient _http;
    private readonly Uri _endpoint;

    public HubClient(HubOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Offline)
        {
            throw new InvalidOperationException("HF_HUB_OFFLINE is set: no network access.");
        }

        _options = options;
        if (!Uri.TryCreate(options.Endpoint.TrimEnd('/') + "/", UriKind.Absolute, out Uri? endpoint) || endpoint.Scheme is not ("http" or "https"))
        {
            throw new ModelLoadException($"HF_ENDPOINT '{options.Endpoint}' is not an http:// or https:// URL.");
        }

        _endpoint = endpoint;
        _http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None })
        {
            Timeout = System.Threading.Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("vqdiffusion-grpc/" + (typeof(HubClient).Assembly.GetName().Version?.ToString(3) ?? "0"));
    }

    /// <summary>The revision's commit and file list (<c>sha</c> and <c>siblings[].rfilename</c>).</summary>
    public async Task<HubRevisionInfo> GetRevisionAsync(HubModelId id, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        var url = new Uri(_endpoint, $"api/models/{id.RepoId}/revision/{Uri.EscapeDataString(id.RevisionOrDefault)}");
        using HttpResponseMessage response = await SendAsync(HttpMethod.Get, url, followRedirects: true, range: null, cancellationToken).ConfigureAwait(false);
        await ThrowForStatusAsync(response, id, null, url).ConfigureAwait(false);
        using var timeout = Timeout(cancellationToken);
        byte[] body = await response.Content.ReadAsByteArrayAsync(timeout.Token).ConfigureAwait(false);
        try
        {
            using var doc = JsonDocument.Parse(body);
            string sha = doc.RootElement.GetProperty("sha").GetString() ?? string.Empty;
            if (!HubModelId.IsCommitHash(sha))
            {
                throw new ModelLoadException($"{id}: the Hub answered {url} with sha '{sha}', not a commit hash.");
            }

            var files = doc.RootElement.TryGetProperty("siblings", out JsonElement siblings) && siblings.ValueKind == JsonValueKind.Array
                ? siblings.EnumerateArray().Select(s => s.GetProperty("rfilename").GetString()).OfType<string>().ToList()
                : [];
            return new HubRevisionInfo(sha, files);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ModelLoadException($"{id}: the Hub's answer to {url} is not a model revision ({ex.Message}).", ex);
        }
    }

    /// <summary>huggingface_hub's <c>get_hf_file_metadata</c> for one file of a revision.</summary>
    public async Task<HubFileMetadata> GetFileMetadataAsync(HubModelId id, string revision, string repoPath, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        Uri url = ResolveUrl(id, revision, repoPath);
        Uri current = url;
        for (int redirect = 0; ; redirect++)
        {
            using HttpResponseMessage response = await SendAsync(HttpMethod.Head, current, followRedirects: false, range: null, cancellationToken).ConfigureAwait(false);
            int status = (int)response.StatusCode;
            if (status is >= 300 and < 400 && response.Headers.Location is { } location && !location.IsAbsoluteUri && redirect < MaxRedirects)
            {
                current = new Uri(current, location); // relative redirects (renamed repositories) are followed
                continue;
            }

            if (status is < 200 or >= 400)
            {
                await ThrowForStatusAsync(response, id, repoPath, url).ConfigureAwait(false);
            }

            string? commit = Header(response, "X-Repo-Commit");
            string? etag = NormalizeEtag(Header(response, "X-Linked-Etag") ?? Header(response, "ETag"));
            string? size = Header(response, "X-Linked-Size") ?? response.Content.Headers.ContentLength?.ToString(CultureInfo.InvariantCulture);
            if (commit is null)
            {
                throw new ModelLoadException($"{id}: {repoPath}: {url} answered without an X-Repo-Commit header; is {_options.Endpoint} a Hugging Face Hub endpoint?");
            }

            if (string.IsNullOrEmpty(etag))
            {
                throw new ModelLoadException($"{id}: {repoPath}: {url} answered without an ETag; cannot cache the file.");
            }

            if (!long.TryParse(size, NumberStyles.None, CultureInfo.InvariantCulture, out long bytes))
            {
                throw new ModelLoadException($"{id}: {repoPath}: {url} answered without a file size (X-Linked-Size / Content-Length).");
            }

            Uri download = response.Headers.Location is { } target ? new Uri(current, target) : current;
            return new HubFileMetadata(repoPath, commit, etag, bytes, download);
        }
    }

    /// <summary>
    /// Downloads a file into <paramref name="incompletePath"/>, resuming from what it already holds (a Range request,
    /// again after a broken connection, up to <see cref="HubOptions.DownloadAttempts"/> attempts), then checks its size and
    /// its hash against the ETag (sha256 for LFS files, the git blob id otherwise). A file that does not match is deleted.
    /// </summary>
    public async Task DownloadAsync(HubModelId id, HubFileMetadata file, string incompletePath, Action<long>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(file);
        for (int attempt = 1; ; attempt++)
        {
            long resume = File.Exists(incompletePath) ? new FileInfo(incompletePath).Length : 0;
            if (resume > file.Size)
            {
                File.Delete(incompletePath);
                resume = 0;
            }

            if (resume == file.Size)
            {
                break;
            }

            try
            {
                await DownloadOnceAsync(id, file, incompletePath, resume, progress, cancellationToken).ConfigureAwait(false);
                break;
            }
            catch (Exception ex) when (attempt < _options.DownloadAttempts && !cancellationToken.IsCancellationRequested && IsTransient(ex))
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt), cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested && IsTransient(ex))
            {
                throw new ModelLoadException($"{id}: {file.RepoPath}: the download from {file.Location} broke off {attempt} time(s) ({ex.Message}); run again to resume it.", ex);
            }
        }

        long length = new FileInfo(incompletePath).Length;
        if (length != file.Size)
        {
            File.Delete(incompletePath);
            throw new ModelLoadException($"{id}: {file.RepoPath}: downloaded {length} bytes, the Hub reported {file.Size}.");
        }

        string? actual = await HashMatchingEtagAsync(incompletePath, file.Etag, cancellationToken).ConfigureAwait(false);
        if (actual is not null && !string.Equals(actual, file.Etag, StringComparison.OrdinalIgnoreCase))
        {
            File.Delete(incompletePath);
            string kind = file.Etag.Length == 64 ? "sha256" : "git blob id";
            throw new ModelLoadException($"{id}: {file.RepoPath}: {kind} of the download is {actual}, the Hub reported {file.Etag}; the file is corrupted (deleted, nothing cached).");
        }
    }

    private async Task DownloadOnceAsync(HubModelId id, HubFileMetadata file, string incompletePath, long resume, Action<long>? progress, CancellationToken cancellationToken)
    {
        using HttpResponseMessage response = await SendAsync(HttpMethod.Get, file.Location, followRedirects: true, range: resume > 0 ? resume : null, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
        {
            File.Delete(incompletePath); // the partial file does not fit what the server has: start over
            throw new IOException($"HTTP 416 for bytes={resume}-");
        }

        if (!response.IsSuccessStatusCode)
        {
            await ThrowForStatusAsync(response, id, file.RepoPath, file.Location).ConfigureAwait(false);
        }

        bool append = resume > 0 && response.StatusCode == HttpStatusCode.PartialContent;
        long done = append ? resume : 0;
        progress?.Invoke(done);
        await using var output = new FileStream(incompletePath, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
        await using Stream input = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var buffer = new byte[1 << 20];
        while (true)
        {
            using var timeout = Timeout(cancellationToken);
            int read = await input.ReadAsync(buffer, timeout.Token).ConfigureAwait(false);
            if (read == 0)
            {
                break;
            }

            await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
            done += read;
            progress?.Invoke(done);
        }

        await output.FlushAsync(cancellationToken).ConfigureAwait(false);
        if (done < file.Size)
        {
            throw new IOException($"the connection closed after {done} of {file.Size} bytes");
        }
    }

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, Uri url, bool followRedirects, long? range, CancellationToken cancellationToken)
    {
        Uri current = url;
        for (int redirect = 0; ; redirect++)
        {
            using var request = new HttpRequestMessage(method, current);
            if (_options.Token is { } token && SameOrigin(current, _endpoint))
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token); // never to another host (a CDN)
            }

            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            if (range is { } from)
            {
                request.Headers.Range = new RangeHeaderValue(from, null);
            }

            HttpResponseMessage response;
            using (var timeout = Timeout(cancellationToken))
            {
                try
                {
                    response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"{method} {current}: no answer within {_options.Timeout.TotalSeconds:F0} s.", ex);
                }
            }

            int status = (int)response.StatusCode;
            if (followRedirects && status is >= 300 and < 400 && response.Headers.Location is { } location && redirect < MaxRedirects)
            {
                current = new Uri(current, location);
                response.Dispose();
                continue;
            }

            return response;
        }
    }

    private CancellationTokenSource Timeout(CancellationToken cancellationToken)
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(_options.Timeout);
        return cts;
    }

    /// <summary>A clear error naming the file (or the revision) and the HTTP status, with the Hub's X-Error-Code and message.</summary>
    private async Task ThrowForStatusAsync(HttpResponseMessage response, HubModelId id, string? repoPath, Uri url)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        int status = (int)response.StatusCode;
        string? code = Header(response, "X-Error-Code");
        string? message = Header(response, "X-Error-Message");
        if (message is null && response.Content is not null)
        {
            try
            {
                string body = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
                message = body.Length is > 0 and <= 300 ? body.ReplaceLineEndings(" ").Trim() : null;
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException)
            {
            }
        }

        string what = repoPath is null ? $"revision '{id.RevisionOrDefault}'" : $"file '{repoPath}' at revision '{id.RevisionOrDefault}'";
        string meaning = (status, code) switch
        {
            (_, "GatedRepo") => "the repository is gated: it needs a token (HF_TOKEN) of an account that was granted access",
            (_, "RepoNotFound") => _options.Token is null
                ? "repository not found (or private/gated: it needs a token (HF_TOKEN))"
                : "repository not found, or the token (HF_TOKEN) has no access to it",
            (_, "RevisionNotFound") => $"revision '{id.RevisionOrDefault}' not found",
            (_, "EntryNotFound") => $"file '{repoPath}' not found at revision '{id.RevisionOrDefault}'",
            (401, _) => _options.Token is null ? "unauthorized: it needs a token (HF_TOKEN)" : "unauthorized: the token (HF_TOKEN) was refused",
            (403, _) => "forbidden: the token (HF_TOKEN) has no access to this repository",
            (404, _) => repoPath is null ? "repository or revision not found" : "repository, revision or file not found",
            _ => response.ReasonPhrase ?? "request failed",
        };
        throw new ModelLoadException(
            $"{id}: {what}: HTTP {status} from {url}: {meaning}{(message is null ? string.Empty : $" ({message})")}.",
            new HttpRequestException(message, null, response.StatusCode));
    }

    /// <summary>The hash the ETag names, or null when the ETag is neither a sha256 (LFS) nor a git blob id.</summary>
    private static async Task<string?> HashMatchingEtagAsync(string path, string etag, CancellationToken cancellationToken)
    {
        bool hex = etag.All(char.IsAsciiHexDigit);
        if (hex && etag.Length == 64)
        {
            await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, useAsync: true);
            return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false));
        }

        if (hex && etag.Length == 40)
        {
            // git's blob id: sha1("blob {size}\0" + content), the Hub's ETag of a file stored in git itself.
            using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
            sha1.AppendData(Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"blob {new FileInfo(path).Length}\0")));
            await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, useAsync: true);
            var buffer = new byte[1 << 16];
            int read;
            while ((read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                sha1.AppendData(buffer, 0, read);
            }

            return Convert.ToHexStringLower(sha1.GetHashAndReset());
        }

        return null;
    }

    /// <summary>huggingface_hub's <c>_normalize_etag</c>: without a weak <c>W/</c> prefix and the quotes.</summary>
    public static string? NormalizeEtag(string? etag)
    {
        if (etag is null)
        {
            return null;
        }

        string value = etag.Trim();
        if (value.StartsWith("W/", StringComparison.Ordinal))
        {
            value = value[2..];
        }

        return value.Trim('"');
    }

    /// <summary>huggingface_hub's <c>hf_hub_url</c>: <c>{endpoint}/{repo}/resolve/{quote(revision, safe="")}/{quote(path)}</c>.</summary>
    public Uri ResolveUrl(HubModelId id, string revision, string repoPath) =>
        new(_endpoint, $"{id.RepoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', HubCache.SplitRepoPath(repoPath).Select(Uri.EscapeDataString))}");

    private static bool SameOrigin(Uri a, Uri b) =>
        string.Equals(a.Scheme, b.Scheme, StringComparison.OrdinalIgnoreCase) && string.Equals(a.IdnHost, b.IdnHost, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port;

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault()
        : response.Content?.Headers.TryGetValues(name, out var content) == true ? content.FirstOrDefault()
        : null;

    /// <summary>A broken connection or a timeout (worth a resumed retry), not an HTTP error status.</summary>
    internal static bool IsTransient(Exception ex) =>
        ex is IOException or TimeoutException || (ex is HttpRequestException http && http.StatusCode is null);

    public void Dispose() => _http.Dispose();
}
