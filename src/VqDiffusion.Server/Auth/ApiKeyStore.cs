using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using VqDiffusion.Server.Options;

namespace VqDiffusion.Server.Auth;

/// <summary>
/// The API keys of <c>Auth:ApiKeys</c> and <c>Auth:ApiKeysFile</c>, kept as SHA-256 digests and compared in constant
/// time. The file is read again when its time stamp or size changes (checked at most every
/// <see cref="AuthOptions.KeysFileRecheckInterval"/>); a changed file that does not parse keeps the keys before it.
/// </summary>
public sealed partial class ApiKeyStore
{
    private readonly IReadOnlyList<Entry> _configured;
    private readonly string? _file;
    private readonly ILogger<ApiKeyStore> _logger;
    private readonly TimeProvider _time;
    private readonly Lock _reload = new();
    private IReadOnlyList<Entry> _fromFile = [];
    private (DateTime Stamp, long Length)? _fileVersion;
    private long _nextCheck;

    public ApiKeyStore(IOptions<AuthOptions> options, ILogger<ApiKeyStore> logger, TimeProvider? time = null)
    {
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _configured = [.. options.Value.ApiKeys.Select(p => new Entry(p.Key, Digest(p.Value)))];
        _file = string.IsNullOrWhiteSpace(options.Value.ApiKeysFile) ? null : options.Value.ApiKeysFile;
        if (_file is not null)
        {
            ReloadIfChanged(force: true);
        }
    }

    /// <summary>The name of the key <paramref name="presented"/>, or null when it is none of them.</summary>
    public string? NameOf(string presented)
    {
        ArgumentNullException.ThrowIfNull(presented);
        ReloadIfChanged(force: false);
        byte[] digest = Digest(presented);
        string? name = null;
        // Every key is compared, in constant time each, so the time taken says nothing about which one matched.
        foreach (Entry entry in _configured.Concat(_fromFile))
        {
            if (CryptographicOperations.FixedTimeEquals(entry.Digest, digest) && name is null)
            {
                name = entry.Name;
            }
        }

        return name;
    }

    /// <summary>
    /// Parses a keys file: one <c>name:key</c> per line, blank lines and lines starting with <c>#</c> ignored. Problems
    /// name the line, never the key.
    /// </summary>
    public static IReadOnlyList<(string Name, string Key)> ParseFile(string path, List<string> problems)
    {
        var keys = new List<(string, string)>();
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            problems.Add($"{AuthOptions.Section}:ApiKeysFile: cannot read '{path}': {ex.Message}");
            return keys;
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            int colon = line.IndexOf(':', StringComparison.Ordinal);
            string where = $"{AuthOptions.Section}:ApiKeysFile '{path}' line {i + 1}";
            if (colon <= 0)
            {
                problems.Add($"{where}: expected 'name:key'.");
                continue;
            }

            string name = line[..colon].Trim();
            string key = line[(colon + 1)..].Trim();
            string? problem = KeyProblem(name, key);
            if (problem is not null)
            {
                problems.Add($"{where}: {problem}");
            }
            else if (!names.Add(name))
            {
                problems.Add($"{where}: the name '{name}' is used twice.");
            }
            else
            {
                keys.Add((name, key));
            }
        }

        if (keys.Count == 0 && problems.Count == 0)
        {
            problems.Add($"{AuthOptions.Section}:ApiKeysFile '{path}' holds no key ('name:key' lines).");
        }

        return keys;
    }

    /// <summary>What is wrong with a key and its name, or null; never quotes the key.</summary>
    public static string? KeyProblem(string name, string key)
    {
        if (!NamePattern().IsMatch(name))
        {
            return $"the key name '{name}' must be 1-64 characters of letters, digits, '.', '_' or '-'.";
        }

        if (key.Length < AuthOptions.MinimumKeyLength)
        {
            return $"the key named '{name}' is shorter than {AuthOptions.MinimumKeyLength} characters.";
        }

        if (key.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c > '~'))
        {
            return $"the key named '{name}' must be printable ASCII without spaces (it travels in an HTTP header).";
        }

        return null;
    }

    private static byte[] Digest(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));

    private void ReloadIfChanged(bool force)
    {
        if (_file is null)
        {
            return;
        }

        long now = _time.GetTimestamp();
        if (!force && now < Volatile.Read(ref _nextCheck))
        {
            return;
        }

        lock (_reload)
        {
            if (!force && now < _nextCheck)
            {
                return;
            }

            _nextCheck = now + (long)(AuthOptions.KeysFileRecheckInterval.TotalSeconds * _time.TimestampFrequency);
            (DateTime, long)? version = null;
            try
            {
                var info = new FileInfo(_file);
                version = info.Exists ? (info.LastWriteTimeUtc, info.Length) : null;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Reported by the read below.
            }

            if (!force && version == _fileVersion)
            {
                return;
            }

            var problems = new List<string>();
            IReadOnlyList<(string Name, string Key)> keys = ParseFile(_file, problems);
            _fileVersion = version;
            if (problems.Count > 0)
            {
                _logger.LogWarning("API keys file not (re)loaded, {KeyCount} key(s) from before kept: {Problems}", _fromFile.Count, string.Join(" ", problems));
                return;
            }

            _fromFile = [.. keys.Select(k => new Entry(k.Name, Digest(k.Key)))];
            _logger.LogInformation("API keys file {Path} loaded: {KeyCount} key(s): {Names}", _file, _fromFile.Count, string.Join(", ", _fromFile.Select(k => k.Name)));
        }
    }

    [GeneratedRegex("^[A-Za-z0-9._-]{1,64}$")]
    private static partial Regex NamePattern();

    private sealed record Entry(string Name, byte[] Digest);
}
