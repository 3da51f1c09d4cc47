using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using VqDiffusion.Model.Pipelines;

namespace VqDiffusion.Server.Options;

/// <summary>Checks <see cref="ModelOptions"/> at start (<c>ValidateOnStart</c>): one message per bad key, naming it.</summary>
public sealed partial class ModelOptionsValidator : IValidateOptions<ModelOptions>
{
    private const string Prefix = ModelOptions.Section + ":";

    public ValidateOptionsResult Validate(string? name, ModelOptions options)
    {
        var problems = new List<string>();
        if (!string.IsNullOrWhiteSpace(options.DType) && !PipelineLoadOptions.TryParseDType(options.DType, out _))
        {
            problems.Add($"{Prefix}{nameof(options.DType)} must be float32, float16 or bfloat16, got '{options.DType}'.");
        }

        if (options.Device is null || !DevicePattern().IsMatch(options.Device))
        {
            problems.Add($"{Prefix}{nameof(options.Device)} must be cpu, cuda or cuda:N, got '{options.Device}'.");
        }

        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }

    [GeneratedRegex("^(cpu|cuda(:[0-9]+)?)$")]
    private static partial Regex DevicePattern();
}
