using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;

namespace VqDiffusion.Server.Queue;

/// <summary>
/// The bounded buffer between the model thread (the writer) and one call's response stream (the reader).
/// <see cref="Post"/> never blocks and never fails for lack of room, so a client that reads slowly (or not at all)
/// cannot stall the model thread or the other runs it interleaves. While the unsent events take less than the
/// budget, every event is kept. Past the budget the stream lags, and a new queued or progress event, or a snapshot of
/// image <c>i</c>, replaces the unsent one of the same kind (and image): the reader gets the latest state, and
/// <see cref="DroppedEvents"/> counts what it missed (it is also stamped on the <see cref="CompletedEvent"/>).
/// Started, image and completed events are never dropped; a request has one started, at most its batch size of
/// images and one completed event.
/// </summary>
/// <remarks>
/// Worst case held at once: the budget, plus one event per coalescing key (queued, progress, one snapshot per image)
/// that arrived while over it, plus the started event and the request's images.
/// </remarks>
public sealed class GenerationEventBuffer : ChannelReader<GenerationEvent>
{
    /// <summary>Default budget of unsent events (1 MiB): a few full-size previews; a reading client never comes close.</summary>
    public const long DefaultBudgetBytes = 1 << 20;

    /// <summary>What an event costs besides its payload arrays (the record, its boxing and list node, rounded up).</summary>
    public const int EventOverheadBytes = 128;

    private readonly object _gate = new();
    private readonly LinkedList<Entry> _pending = new();
    private readonly Dictionary<(int Kind, int Image), LinkedListNode<Entry>> _latest = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource<bool>? _waiter;
    private long _bytes;
    private long _peakBytes;
    private int _dropped;
    private bool _writingDone;
    private Exception? _error;

    public GenerationEventBuffer(long budgetBytes = DefaultBudgetBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        BudgetBytes = budgetBytes;
    }

    public long BudgetBytes { get; }

    /// <summary>Events replaced by a later one of the same kind before they were sent.</summary>
    public int DroppedEvents
    {
        get
        {
            lock (_gate)
            {
                return _dropped;
            }
        }
    }

    /// <summary>Estimated bytes of the unsent events now.</summary>
    public long BufferedBytes
    {
        get
        {
            lock (_gate)
            {
                return _bytes;
            }
        }
    }

    /// <summary>The most <see cref="BufferedBytes"/> ever held.</summary>
    public long PeakBufferedBytes
    {
        get
        {
            lock (_gate)
            {
                return _peakBytes;
            }
        }
    }

    public override bool CanCount => true;

    public override int Count
    {
        get
        {
            lock (_gate)
            {
                return _pending.Count;
            }
        }
    }

    public override Task Completion => _completion.Task;

    /// <summary>Adds an event (coalescing it when over the budget); false once the buffer is completed.</summary>
    public bool Post(GenerationEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        TaskCompletionSource<bool>? waiter;
        lock (_gate)
        {
            if (_writingDone)
            {
                return false;
            }

            if (e is CompletedEvent completed)
            {
                e = completed with { DroppedEvents = _dropped };
            }

            long size = SizeOf(e);
            (int, int)? key = KeyOf(e);
            if (key is { } k && _bytes + size > BudgetBytes && _latest.Remove(k, out LinkedListNode<Entry>? older))
            {
                _pending.Remove(older);
                _bytes -= older.Value.Bytes;
                _dropped++;
            }

            LinkedListNode<Entry> node = _pending.AddLast(new Entry(e, size, key));
            if (key is { } added)
            {
                _latest[added] = node;
            }

            _bytes += size;
            _peakBytes = Math.Max(_peakBytes, _bytes);
            waiter = _waiter;
            _waiter = null;
        }

        waiter?.TrySetResult(true);
        return true;
    }

    /// <summary>No more events; the reader gets the pending ones, then the end (or <paramref name="error"/>).</summary>
    public bool Complete(Exception? error = null)
    {
        TaskCompletionSource<bool>? waiter;
        lock (_gate)
        {
            if (_writingDone)
            {
                return false;
            }

            _writingDone = true;
            _error = error;
            waiter = _waiter;
            _waiter = null;
            if (_pending.Count == 0)
            {
                SignalCompletion();
            }
        }

        waiter?.TrySetResult(true);
        return true;
    }

    public override bool TryRead([MaybeNullWhen(false)] out GenerationEvent item)
    {
        lock (_gate)
        {
            LinkedListNode<Entry>? first = _pending.First;
            if (first is null)
            {
                item = null;
                return false;
            }

            _pending.RemoveFirst();
            _bytes -= first.Value.Bytes;
            if (first.Value.Key is { } key && _latest.TryGetValue(key, out LinkedListNode<Entry>? latest) && latest == first)
            {
                _latest.Remove(key);
            }

            if (_pending.Count == 0 && _writingDone)
            {
                SignalCompletion();
            }

            item = first.Value.Event;
            return true;
        }
    }

    public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default)
    {
        Task<bool> wait;
        lock (_gate)
        {
            if (_pending.Count > 0)
            {
                return new ValueTask<bool>(true);
            }

            if (_writingDone)
            {
                return _error is null ? new ValueTask<bool>(false) : ValueTask.FromException<bool>(_error);
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<bool>(cancellationToken);
            }

            _waiter ??= new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            wait = _waiter.Task;
        }

        // Woken by the next post or the completion; a spurious true (then an empty TryRead) is allowed.
        return new ValueTask<bool>(cancellationToken.CanBeCanceled ? wait.WaitAsync(cancellationToken) : wait);
    }

    /// <summary>The coalescing key: one per kind for queued and progress, one per image for snapshots; null = kept.</summary>
    public static (int Kind, int Image)? KeyOf(GenerationEvent e) => e switch
    {
        QueuedEvent => (0, 0),
        ProgressEvent => (1, 0),
        SnapshotEvent s => (2, s.ImageIndex),
        _ => null,
    };

    /// <summary>Estimated bytes an event holds while it waits.</summary>
    public static long SizeOf(GenerationEvent e) => EventOverheadBytes + e switch
    {
        SnapshotEvent s => ((long)(s.Tokens?.Length ?? 0) * sizeof(int)) + (s.Preview?.Length ?? 0),
        ImageEvent i => i.Data.Length,
        StartedEvent s => (long)s.Timesteps.Count * sizeof(long),
        _ => 0,
    };

    private void SignalCompletion()
    {
        switch (_error)
        {
            case null:
                _completion.TrySetResult();
                break;
            case OperationCanceledException oce:
                _completion.TrySetCanceled(oce.CancellationToken);
                break;
            default:
                _completion.TrySetException(_error);
                break;
        }
    }

    private readonly record struct Entry(GenerationEvent Event, long Bytes, (int Kind, int Image)? Key);
}
