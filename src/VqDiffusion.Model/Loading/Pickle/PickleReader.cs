using System.Buffers.Binary;
using System.Text;

namespace VqDiffusion.Model.Loading.Pickle;

/// <summary>
/// A small, safe unpickler (Python pickle protocols 2 to 5, the binary opcodes) for checkpoint files.
/// It never executes code from the stream: GLOBAL/STACK_GLOBAL are resolved through
/// <c>findGlobal</c>, which returns only allow-listed values or <see cref="PickleFunction"/>s and throws
/// for anything else; REDUCE/NEWOBJ may only call such functions; BINPERSID goes to
/// <c>persistentLoad</c>. Every length and memo index is checked against the stream, so a malformed
/// pickle gives a <see cref="PickleException"/> with the offset of the offending opcode.
/// </summary>
internal sealed class PickleReader
{
    private const int HighestProtocol = 5;

    // Opcodes (pickletools names).
    private const byte Mark = (byte)'(';
    private const byte Stop = (byte)'.';
    private const byte Pop = (byte)'0';
    private const byte PopMark = (byte)'1';
    private const byte Dup = (byte)'2';
    private const byte BinInt = (byte)'J';
    private const byte BinInt1 = (byte)'K';
    private const byte BinInt2 = (byte)'M';
    private const byte None = (byte)'N';
    private const byte BinPersId = (byte)'Q';
    private const byte Reduce = (byte)'R';
    private const byte BinString = (byte)'T';
    private const byte ShortBinString = (byte)'U';
    private const byte BinUnicode = (byte)'X';
    private const byte Append = (byte)'a';
    private const byte Build = (byte)'b';
    private const byte Global = (byte)'c';
    private const byte Dict = (byte)'d';
    private const byte EmptyDict = (byte)'}';
    private const byte Appends = (byte)'e';
    private const byte BinGet = (byte)'h';
    private const byte LongBinGet = (byte)'j';
    private const byte List = (byte)'l';
    private const byte EmptyList = (byte)']';
    private const byte BinPut = (byte)'q';
    private const byte LongBinPut = (byte)'r';
    private const byte SetItem = (byte)'s';
    private const byte Tuple = (byte)'t';
    private const byte EmptyTuple = (byte)')';
    private const byte SetItems = (byte)'u';
    private const byte BinFloat = (byte)'G';
    private const byte Proto = 0x80;
    private const byte NewObj = 0x81;
    private const byte Tuple1 = 0x85;
    private const byte Tuple2 = 0x86;
    private const byte Tuple3 = 0x87;
    private const byte NewTrue = 0x88;
    private const byte NewFalse = 0x89;
    private const byte Long1 = 0x8a;
    private const byte Long4 = 0x8b;
    private const byte BinBytes = (byte)'B';
    private const byte ShortBinBytes = (byte)'C';
    private const byte ShortBinUnicode = 0x8c;
    private const byte BinUnicode8 = 0x8d;
    private const byte BinBytes8 = 0x8e;
    private const byte NewObjEx = 0x92;
    private const byte StackGlobal = 0x93;
    private const byte Memoize = 0x94;
    private const byte Frame = 0x95;
    private const byte ByteArray8 = 0x96;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly ReadOnlyMemory<byte> _data;
    private readonly Func<string, string, object?> _findGlobal;
    private readonly Func<object?, object?> _persistentLoad;
    private readonly List<object?> _stack = [];
    private readonly List<int> _marks = [];
    private readonly Dictionary<long, object?> _memo = [];
    private int _pos;
    private int _opAt;

    /// <param name="data">The whole pickle stream.</param>
    /// <param name="findGlobal">Resolves <c>(module, name)</c> to an allow-listed value; throws <see cref="PickleException"/> otherwise.</param>
    /// <param name="persistentLoad">Resolves a persistent id (the object popped by BINPERSID).</param>
    public PickleReader(ReadOnlyMemory<byte> data, Func<string, string, object?> findGlobal, Func<object?, object?> persistentLoad)
    {
        _data = data;
        _findGlobal = findGlobal;
        _persistentLoad = persistentLoad;
    }

    /// <summary>Runs the stream up to STOP and returns the unpickled object.</summary>
    public object? Load()
    {
        try
        {
            return Run();
        }
        catch (PickleException ex)
        {
            throw new PickleException($"{ex.Message} (pickle opcode at byte {_opAt})");
        }
    }

    /// <summary>Python-style type name of an unpickled value, for error messages.</summary>
    public static string TypeName(object? value) => value switch
    {
        null => "None",
        string => "str",
        long => "int",
        double => "float",
        bool => "bool",
        byte[] => "bytes",
        PickleTuple => "tuple",
        List<object?> => "list",
        PickleDict d => d.IsOrderedDict ? "OrderedDict" : "dict",
        PickleFunction f => f.QualifiedName,
        _ => value.ToString() ?? value.GetType().Name,
    };

    private object? Run()
    {
        ReadOnlySpan<byte> data = _data.Span;
        while (true)
        {
            _opAt = _pos;
            if (_pos >= data.Length)
            {
                throw new PickleException("the pickle ends without a STOP opcode (truncated?)");
            }

            byte op = data[_pos++];
            switch (op)
            {
                case Proto:
                    int protocol = ReadByte();
                    if (protocol > HighestProtocol)
                    {
                        throw new PickleException($"unsupported pickle protocol {protocol}");
                    }

                    break;
                case Frame:
                    long frameLength = ReadInt64();
                    if (frameLength < 0 || frameLength > data.Length - _pos)
                    {
                        throw new PickleException($"frame of {frameLength} bytes runs past the end of the pickle");
                    }

                    break;
                case Stop:
                    if (_stack.Count != 1 || _marks.Count != 0)
                    {
                        throw new PickleException($"STOP with {_stack.Count} objects on the stack and {_marks.Count} open marks");
                    }

                    return _stack[0];
                case Mark:
                    _marks.Add(_stack.Count);
                    break;
                case Pop:
                    if (_marks.Count > 0 && _marks[^1] == _stack.Count)
                    {
                        _marks.RemoveAt(_marks.Count - 1);
                    }
                    else
                    {
                        PopValue();
                    }

                    break;
                case PopMark:
                    PopToMark();
                    break;
                case Dup:
                    Push(Peek());
                    break;
                case None:
                    Push(null);
                    break;
                case NewTrue:
                    Push(true);
                    break;
                case NewFalse:
                    Push(false);
                    break;
                case BinInt:
                    Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4)));
                    break;
                case BinInt1:
                    Push((long)ReadByte());
                    break;
                case BinInt2:
                    Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2)));
                    break;
                case Long1:
                    Push(DecodeLong(Take(ReadByte())));
                    break;
                case Long4:
                    Push(DecodeLong(Take(CheckedLength(BinaryPrimitives.ReadInt32LittleEndian(Take(4))))));
                    break;
                case BinFloat:
                    Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8)));
                    break;
                case ShortBinUnicode:
                    Push(DecodeUtf8(Take(ReadByte())));
                    break;
                case BinUnicode:
                    Push(DecodeUtf8(Take(CheckedLength(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))))));
                    break;
                case BinUnicode8:
                    Push(DecodeUtf8(Take(CheckedLength(BinaryPrimitives.ReadUInt64LittleEndian(Take(8))))));
                    break;
                case ShortBinString:
                    Push(Encoding.Latin1.GetString(Take(ReadByte())));
                    break;
                case BinString:
                    Push(Encoding.Latin1.GetString(Take(CheckedLength(BinaryPrimitives.ReadInt32LittleEndian(Take(4))))));
                    break;
                case ShortBinBytes:
                    Push(Take(ReadByte()).ToArray());
                    break;
                case BinBytes:
                    Push(Take(CheckedLength(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray());
                    break;
                case BinBytes8:
                case ByteArray8:
                    Push(Take(CheckedLength(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))).ToArray());
                    break;
                case EmptyTuple:
                    Push(PickleTuple.Empty);
                    break;
                case Tuple:
                    Push(new PickleTuple(PopToMark()));
                    break;
                case Tuple1:
                    Push(new PickleTuple(PopN(1)));
                    break;
                case Tuple2:
                    Push(new PickleTuple(PopN(2)));
                    break;
                case Tuple3:
                    Push(new PickleTuple(PopN(3)));
                    break;
                case EmptyList:
                    Push(new List<object?>());
                    break;
                case List:
                    Push(new List<object?>(PopToMark()));
                    break;
                case Append:
                    {
                        object? item = PopValue();
                        ExpectList(Peek(), "APPEND").Add(item);
                        break;
                    }

                case Appends:
                    {
                        object?[] items = PopToMark();
                        ExpectList(Peek(), "APPENDS").AddRange(items);
                        break;
                    }

                case EmptyDict:
                    Push(new PickleDict(ordered: false));
                    break;
                case Dict:
                    {
                        var dict = new PickleDict(ordered: false);
                        AddPairs(dict, PopToMark());
                        Push(dict);
                        break;
                    }

                case SetItem:
                    {
                        object? value = PopValue();
                        object? key = PopValue();
                        ExpectDict(Peek(), "SETITEM").Set(key, value);
                        break;
                    }

                case SetItems:
                    {
                        object?[] pairs = PopToMark();
                        AddPairs(ExpectDict(Peek(), "SETITEMS"), pairs);
                        break;
                    }

                case BinPut:
                    _memo[ReadByte()] = Peek();
                    break;
                case LongBinPut:
                    _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Peek();
                    break;
                case Memoize:
                    _memo[_memo.Count] = Peek();
                    break;
                case BinGet:
                    Push(MemoGet(ReadByte()));
                    break;
                case LongBinGet:
                    Push(MemoGet(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))));
                    break;
                case Global:
                    {
                        string module = ReadLine();
                        string name = ReadLine();
                        Push(_findGlobal(module, name));
                        break;
                    }

                case StackGlobal:
                    {
                        object? name = PopValue();
                        object? module = PopValue();
                        if (module is not string m || name is not string n)
                        {
                            throw new PickleException($"STACK_GLOBAL expects two strings, got {TypeName(module)} and {TypeName(name)}");
                        }

                        Push(_findGlobal(m, n));
                        break;
                    }

                case Reduce:
                    {
                        object? args = PopValue();
                        object? callable = PopValue();
                        Push(Call(callable, args, "REDUCE"));
                        break;
                    }

                case NewObj:
                    {
                        object? args = PopValue();
                        object? cls = PopValue();
                        Push(Call(cls, args, "NEWOBJ"));
                        break;
                    }

                case NewObjEx:
                    {
                        object? kwargs = PopValue();
                        object? args = PopValue();
                        object? cls = PopValue();
                        if (kwargs is not PickleDict { Count: 0 })
                        {
                            throw new PickleException($"NEWOBJ_EX with keyword arguments for {TypeName(cls)} is not supported");
                        }

                        Push(Call(cls, args, "NEWOBJ_EX"));
                        break;
                    }

                case Build:
                    {
                        object? state = PopValue();
                        object? target = Peek();
                        if (target is PickleDict dict)
                        {
                            dict.State = state;
                        }
                        else if (state is not null)
                        {
                            throw new PickleException($"BUILD (setting the state of an object) is not supported for {TypeName(target)}");
                        }

                        break;
                    }

                case BinPersId:
                    Push(_persistentLoad(PopValue()));
                    break;
                default:
                    throw new PickleException($"unsupported pickle opcode 0x{op:x2}");
            }
        }
    }

    private static object? Call(object? callable, object? args, string opcode)
    {
        if (callable is not PickleFunction function)
        {
            throw new PickleException($"{opcode} on {TypeName(callable)}, which is not an allowed callable");
        }

        if (args is not PickleTuple tuple)
        {
            throw new PickleException($"{opcode} of {function.QualifiedName} expects a tuple of arguments, got {TypeName(args)}");
        }

        return function.Call(tuple);
    }

    private static void AddPairs(PickleDict dict, object?[] items)
    {
        if (items.Length % 2 != 0)
        {
            throw new PickleException($"odd number of items ({items.Length}) for a dict");
        }

        for (int i = 0; i < items.Length; i += 2)
        {
            dict.Set(items[i], items[i + 1]);
        }
    }

    private static List<object?> ExpectList(object? value, string opcode) =>
        value as List<object?> ?? throw new PickleException($"{opcode} on {TypeName(value)}, expected a list");

    private static PickleDict ExpectDict(object? value, string opcode) =>
        value as PickleDict ?? throw new PickleException($"{opcode} on {TypeName(value)}, expected a dict");

    private static long DecodeLong(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0)
        {
            return 0;
        }

        if (bytes.Length > 8)
        {
            var big = new System.Numerics.BigInteger(bytes, isUnsigned: false, isBigEndian: false);
            if (big < long.MinValue || big > long.MaxValue)
            {
                throw new PickleException($"integer of {bytes.Length} bytes does not fit in 64 bits");
            }

            return (long)big;
        }

        Span<byte> buffer = stackalloc byte[8];
        bytes.CopyTo(buffer);
        if ((bytes[^1] & 0x80) != 0)
        {
            buffer[bytes.Length..].Fill(0xff);
        }

        return BinaryPrimitives.ReadInt64LittleEndian(buffer);
    }

    private static string DecodeUtf8(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new PickleException("string is not valid UTF-8");
        }
    }

    private int CheckedLength(long length)
    {
        if (length < 0 || length > _data.Length - _pos)
        {
            throw new PickleException($"length {length} runs past the end of the pickle ({_data.Length - _pos} bytes left)");
        }

        return (int)length;
    }

    private int CheckedLength(ulong length) =>
        CheckedLength(length > long.MaxValue ? -1L : (long)length);

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count > _data.Length - _pos)
        {
            throw new PickleException($"the pickle ends inside an opcode argument ({count} bytes needed, {_data.Length - _pos} left)");
        }

        ReadOnlySpan<byte> span = _data.Span.Slice(_pos, count);
        _pos += count;
        return span;
    }

    private byte ReadByte() => Take(1)[0];

    private long ReadInt64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));

    private string ReadLine()
    {
        ReadOnlySpan<byte> rest = _data.Span[_pos..];
        int end = rest.IndexOf((byte)'\n');
        if (end < 0)
        {
            throw new PickleException("GLOBAL argument is not terminated by a newline");
        }

        _pos += end + 1;
        return DecodeUtf8(rest[..end]);
    }

    private object? MemoGet(long index) =>
        _memo.TryGetValue(index, out object? value) ? value : throw new PickleException($"memo entry {index} was never stored");

    private void Push(object? value) => _stack.Add(value);

    private object? Peek()
    {
        if (_stack.Count == 0 || (_marks.Count > 0 && _marks[^1] == _stack.Count))
        {
            throw new PickleException("stack underflow");
        }

        return _stack[^1];
    }

    private object? PopValue()
    {
        object? value = Peek();
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object?[] PopN(int count)
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count - floor < count)
        {
            throw new PickleException("stack underflow");
        }

        object?[] items = _stack.GetRange(_stack.Count - count, count).ToArray();
        _stack.RemoveRange(_stack.Count - count, count);
        return items;
    }

    private object?[] PopToMark()
    {
        if (_marks.Count == 0)
        {
            throw new PickleException("no MARK on the stack");
        }

        int mark = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        object?[] items = _stack.GetRange(mark, _stack.Count - mark).ToArray();
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }
}
