// MSBuild inline task (see TorchSharp.Native.targets). Plain C#, no project reference.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class WeakenMissingGlibcxxVersions : Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    [Required]
    public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

    public override bool Execute()
    {
        string? hostLib = FindHostLibStdCxx();
        if (hostLib is null)
        {
            Log.LogMessage(MessageImportance.Low, "libstdc++.so.6 not found on this host; TorchSharp native library left unchanged.");
            return true;
        }

        byte[] host = File.ReadAllBytes(hostLib);
        foreach (ITaskItem item in Files)
        {
            string path = item.GetMetadata("FullPath");
            try
            {
                Patch(path, host, hostLib);
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                Log.LogWarning("Could not check {0} for missing GLIBCXX versions: {1}", path, ex.Message);
            }
        }

        return !Log.HasLoggedErrors;
    }

    private void Patch(string path, byte[] host, string hostLib)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2 || elf[5] != 1)
        {
            throw new InvalidDataException("not a little-endian ELF64 file");
        }

        ulong shoff = BitConverter.ToUInt64(elf, 0x28);
        ushort shentsize = BitConverter.ToUInt16(elf, 0x3A);
        ushort shnum = BitConverter.ToUInt16(elf, 0x3C);
        var changed = new List<string>();
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(elf, sh + 4) != ShtGnuVerneed)
            {
                continue;
            }

            int offset = checked((int)BitConverter.ToUInt64(elf, sh + 0x18));
            uint link = BitConverter.ToUInt32(elf, sh + 0x28);
            uint count = BitConverter.ToUInt32(elf, sh + 0x2C); // sh_info = number of Verneed entries
            int strtab = checked((int)BitConverter.ToUInt64(elf, checked((int)shoff + (int)link * shentsize) + 0x18));

            int vn = offset;
            for (uint n = 0; n < count; n++)
            {
                ushort cnt = BitConverter.ToUInt16(elf, vn + 2);
                string file = ReadString(elf, strtab + (int)BitConverter.ToUInt32(elf, vn + 4));
                int aux = vn + (int)BitConverter.ToUInt32(elf, vn + 8);
                for (int a = 0; a < cnt; a++)
                {
                    ushort flags = BitConverter.ToUInt16(elf, aux + 4);
                    string name = ReadString(elf, strtab + (int)BitConverter.ToUInt32(elf, aux + 8));
                    bool isCxx = file.StartsWith("libstdc++", StringComparison.Ordinal);
                    if (isCxx && (flags & VerFlgWeak) == 0 && !Defines(host, name))
                    {
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, aux + 4);
                        changed.Add(name);
                    }

                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }

                vn += (int)BitConverter.ToUInt32(elf, vn + 12);
            }
        }

        if (changed.Count == 0)
        {
            return;
        }

        // Write a new file (never modify a hard-linked copy of the NuGet cache in place).
        string tmp = path + ".vqd-tmp";
        File.WriteAllBytes(tmp, elf);
        File.Delete(path);
        File.Move(tmp, path);
        Log.LogMessage(MessageImportance.High,
            "{0}: marked {1} weak (not defined by {2}).", Path.GetFileName(path), string.Join(", ", changed), hostLib);
    }

    private static string ReadString(byte[] data, int start)
    {
        int end = Array.IndexOf(data, (byte)0, start);
        return Encoding.ASCII.GetString(data, start, end - start);
    }

    private static bool Defines(byte[] lib, string version)
    {
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        return IndexOf(lib, needle) >= 0;
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i <= haystack.Length - needle.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j])
            {
                j++;
            }

            if (j == needle.Length && (i == 0 || haystack[i - 1] == 0))
            {
                return i;
            }
        }

        return -1;
    }

    private static string? FindHostLibStdCxx()
    {
        string[] candidates =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6",
            "/lib64/libstdc++.so.6",
            "/usr/lib/libstdc++.so.6",
        };
        foreach (string c in candidates)
        {
            if (File.Exists(c))
            {
                return c;
            }
        }

        return null;
    }
}
