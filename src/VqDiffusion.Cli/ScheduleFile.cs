using System.Text.Json;

namespace VqDiffusion.Cli;

/// <summary><c>--unmask-schedule FILE</c>: a JSON array of integers, tokens to unmask per timestep (index = t).</summary>
public static class ScheduleFile
{
    public static int[] Read(string path)
    {
        try
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
            {
                throw new UsageException($"--unmask-schedule {path}: expected a JSON array of integers (one per timestep, index = t).");
            }

            var counts = new List<int>();
            foreach (JsonElement v in doc.RootElement.EnumerateArray())
            {
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int count))
                {
                    throw new UsageException($"--unmask-schedule {path}: entry {counts.Count} is not an integer.");
                }

                counts.Add(count);
            }

            return counts.ToArray();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--unmask-schedule {path}: {ex.Message}");
        }
        catch (JsonException)
        {
            throw new UsageException($"--unmask-schedule {path}: not valid JSON.");
        }
    }
}
