using Microsoft.Extensions.Options;
using VqDiffusion.Server.Auth;

namespace VqDiffusion.Server.Options;

/// <summary>Checks <see cref="AuthOptions"/> at start: one message per problem, naming its key and never a secret.</summary>
public sealed class AuthOptionsValidator : IValidateOptions<AuthOptions>
{
    public ValidateOptionsResult Validate(string? name, AuthOptions options)
    {
        var problems = new List<string>();
        foreach ((string keyName, string key) in options.ApiKeys)
        {
            string? problem = ApiKeyStore.KeyProblem(keyName, key ?? string.Empty);
            if (problem is not null)
            {
                problems.Add($"{AuthOptions.Section}:ApiKeys:{keyName}: {problem}");
            }
        }

        if (!string.IsNullOrWhiteSpace(options.ApiKeysFile))
        {
            IReadOnlyList<(string Name, string Key)> fromFile = ApiKeyStore.ParseFile(options.ApiKeysFile, problems);
            foreach (string both in fromFile.Select(k => k.Name).Where(options.ApiKeys.ContainsKey))
            {
                problems.Add($"{AuthOptions.Section}:ApiKeysFile: the key name '{both}' is also in {AuthOptions.Section}:ApiKeys.");
            }
        }

        JwtOptions jwt = options.Jwt;
        if (jwt.Enabled)
        {
            const string jwtPrefix = AuthOptions.Section + ":Jwt:";
            if (string.IsNullOrWhiteSpace(jwt.Audience))
            {
                problems.Add($"{jwtPrefix}Audience is required with JWT validation (the 'aud' tokens must name).");
            }

            bool hasKeys = !string.IsNullOrEmpty(jwt.SigningKey) || !string.IsNullOrWhiteSpace(jwt.SigningKeyFile);
            if (!string.IsNullOrWhiteSpace(jwt.Authority))
            {
                if (!Uri.TryCreate(jwt.Authority, UriKind.Absolute, out Uri? authority)
                    || !(authority.Scheme == Uri.UriSchemeHttps || (authority.Scheme == Uri.UriSchemeHttp && authority.IsLoopback)))
                {
                    problems.Add($"{jwtPrefix}Authority must be an https:// URL (http:// only on loopback), got '{jwt.Authority}'.");
                }

                if (hasKeys)
                {
                    problems.Add($"{jwtPrefix}Authority and SigningKey/SigningKeyFile exclude each other: the authority publishes its keys.");
                }
            }
            else
            {
                if (string.IsNullOrWhiteSpace(jwt.Issuer))
                {
                    problems.Add($"{jwtPrefix}Issuer is required with SigningKey/SigningKeyFile (the 'iss' tokens must name).");
                }

                SigningKeys.Load(jwt, problems);
            }

            if (string.IsNullOrWhiteSpace(jwt.NameClaim))
            {
                problems.Add($"{jwtPrefix}NameClaim must not be empty (default 'sub').");
            }

            if (jwt.ClockSkew < TimeSpan.Zero || jwt.ClockSkew > TimeSpan.FromHours(1))
            {
                problems.Add($"{jwtPrefix}ClockSkew must be between 0 and 1 hour, got {jwt.ClockSkew}.");
            }
        }

        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
