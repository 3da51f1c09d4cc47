using System.Text.Json;

namespace VqDiffusion.Cli;

/// <summary><c>--latents FILE</c> and <c>--edit-tokens FILE</c>: a JSON array of integer arrays, shape [images, H·W].</summary>
public static class LatentsFile
{
    /// <summary>Reads the file and returns the rows flattened row-major, checking the shape.</summary>
    public static long[] Read(string path, int images, int pixels, string flag = "--latents")
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{flag} {path}: {ex.Message}");
        }
        catch (JsonException)
        {
            // One fixed line (no parser internals), so that the client examples can print the same one.
            throw new UsageException($"{flag} {path}: not valid JSON.");
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
            {
                throw new UsageException($"{flag} {path}: expected a JSON array of {images} integer arrays.");
            }

            int rows = doc.RootElement.GetArrayLength();
            if (rows != images)
            {
                throw new UsageException($"{flag} {path}: has {rows} rows, expected {images} (prompts × images per prompt).");
            }

            var flat = new long[images * pixels];
            int r = 0;
            foreach (JsonElement row in doc.RootElement.EnumerateArray())
            {
                if (row.ValueKind != JsonValueKind.Array || row.GetArrayLength() != pixels)
                {
                    throw new UsageException($"{flag} {path}: row {r} must be an array of {pixels} integers (H·W).");
                }

                int c = 0;
                foreach (JsonElement v in row.EnumerateArray())
                {
                    if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long value))
                    {
                        throw new UsageException($"{flag} {path}: row {r}, column {c} is not an integer.");
                    }

                    flat[(r * pixels) + c] = value;
                    c++;
                }

                r++;
            }

            return flat;
        }
    }
}
