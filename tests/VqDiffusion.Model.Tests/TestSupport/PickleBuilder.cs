using System.Buffers.Binary;
using System.Text;

namespace VqDiffusion.Model.Tests.TestSupport;

/// <summary>
/// Writes pickle opcodes by hand (the same bytes Python's pickler emits), to build test checkpoints
/// without Python: hostile ones, malformed ones and ones with known strides and offsets.
/// </summary>
public sealed class PickleBuilder
{
    private readonly List<byte> _bytes = [];

    public PickleBuilder Raw(params byte[] bytes)
    {
        _bytes.AddRange(bytes);
        return this;
    }

    public PickleBuilder Proto(byte version) => Raw(0x80, version);

    public PickleBuilder Stop() => Raw((byte)'.');

    public PickleBuilder Mark() => Raw((byte)'(');

    public PickleBuilder Tuple() => Raw((byte)'t');

    public PickleBuilder EmptyTuple() => Raw((byte)')');

    public PickleBuilder EmptyDict() => Raw((byte)'}');

    public PickleBuilder SetItem() => Raw((byte)'s');

    public PickleBuilder SetItems() => Raw((byte)'u');

    public PickleBuilder Reduce() => Raw((byte)'R');

    public PickleBuilder BinPersId() => Raw((byte)'Q');

    public PickleBuilder False() => Raw(0x89);

    public PickleBuilder None() => Raw((byte)'N');

    public PickleBuilder BinPut(byte index) => Raw((byte)'q', index);

    public PickleBuilder BinGet(byte index) => Raw((byte)'h', index);

    /// <summary>GLOBAL: <c>c module\n name\n</c> (protocols 0 to 3).</summary>
    public PickleBuilder Global(string module, string name) =>
        Raw((byte)'c').Raw(Encoding.UTF8.GetBytes($"{module}\n{name}\n"));

    /// <summary>STACK_GLOBAL (protocol 4): the two names as strings, then 0x93.</summary>
    public PickleBuilder StackGlobal(string module, string name) => Str(module).Str(name).Raw(0x93);

    /// <summary>BINUNICODE.</summary>
    public PickleBuilder Str(string value)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(value);
        var length = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(length, utf8.Length);
        return Raw((byte)'X').Raw(length).Raw(utf8);
    }

    /// <summary>The smallest integer opcode for <paramref name="value"/>, as Python picks it.</summary>
    public PickleBuilder Int(long value)
    {
        if (value is >= 0 and < 256)
        {
            return Raw((byte)'K', (byte)value);
        }

        if (value is >= 0 and < 65536)
        {
            var b = new byte[2];
            BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)value);
            return Raw((byte)'M').Raw(b);
        }

        if (value is >= int.MinValue and <= int.MaxValue)
        {
            var b = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(b, (int)value);
            return Raw((byte)'J').Raw(b);
        }

        var l = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(l, value);
        return Raw(0x8a, 8).Raw(l);
    }

    public PickleBuilder IntTuple(params long[] values)
    {
        if (values.Length == 0)
        {
            return EmptyTuple();
        }

        Mark();
        foreach (long v in values)
        {
            Int(v);
        }

        return Tuple();
    }

    /// <summary>An empty <c>collections.OrderedDict()</c>.</summary>
    public PickleBuilder OrderedDict() => Global("collections", "OrderedDict").EmptyTuple().Reduce();

    /// <summary>
    /// <c>torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())</c> with the
    /// persistent id <c>('storage', torch.&lt;storageType&gt;, key, 'cpu', numel)</c>, as torch.save writes it.
    /// </summary>
    public PickleBuilder Tensor(string storageType, string key, long numel, long offset, long[] size, long[] stride) =>
        Global("torch._utils", "_rebuild_tensor_v2").Mark()
            .Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(numel).Tuple().BinPersId()
            .Int(offset).IntTuple(size).IntTuple(stride).False().OrderedDict()
            .Tuple().Reduce();

    public byte[] ToArray() => [.. _bytes];
}
