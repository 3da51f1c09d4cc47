using System.Collections.Concurrent;

namespace VqDiffusion.Model.Runtime;

/// <summary>
/// The one thread that runs model work (loading, warm-up, denoising, decoding), in the order it is posted.
/// A host that can give up its main thread calls <see cref="RunOnCurrentThread"/> from <c>Main</c>: with
/// <see cref="GlibcMalloc"/> that thread allocates from glibc's main arena, where freed tensor buffers stay
/// mapped, so a request costs what it costs in a console program (the server's <c>Program</c> does this).
/// Otherwise (tests, embedded hosts) the first <see cref="Post{T}"/> starts a dedicated background thread.
/// </summary>
public sealed class ModelThread : IDisposable
{
    private readonly BlockingCollection<Action> _work = new();
    private readonly object _gate = new();
    private readonly string _name;
    private Thread? _thread;
    private bool _callerWillRun;

    public ModelThread(string name = "vqd-model")
    {
        _name = name;
    }

    /// <summary>Whether model work runs on the process's main thread (the caller of <see cref="RunOnCurrentThread"/>).</summary>
    public bool OnMainThread { get; private set; }

    /// <summary>The managed id of the thread running the work, or null before it started.</summary>
    public int? ThreadId { get; private set; }

    /// <summary>True when called from the model thread itself.</summary>
    public bool IsCurrent => ThreadId == Environment.CurrentManagedThreadId;

    /// <summary>
    /// Promises that the caller will call <see cref="RunOnCurrentThread"/>; work posted before that waits for it
    /// instead of starting a dedicated thread. Call before anything is posted.
    /// </summary>
    public void ReserveCallingThread()
    {
        lock (_gate)
        {
            if (_thread is not null)
            {
                throw new InvalidOperationException("The model thread has already started.");
            }

            _callerWillRun = true;
        }
    }

    /// <summary>
    /// Runs posted work on the calling thread until <see cref="Complete"/> is called and the queue is empty.
    /// </summary>
    public void RunOnCurrentThread()
    {
        lock (_gate)
        {
            if (_thread is not null || ThreadId is not null)
            {
                throw new InvalidOperationException("The model thread is already running.");
            }

            ThreadId = Environment.CurrentManagedThreadId;
            OnMainThread = true;
        }

        Drain();
    }

    /// <summary>Runs <paramref name="work"/> on the model thread; the task completes with its result.</summary>
    public Task<T> Post<T>(Func<T> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        EnsureStarted();
        try
        {
            _work.Add(() =>
            {
                try
                {
                    done.TrySetResult(work());
                }
                catch (OperationCanceledException ex)
                {
                    done.TrySetCanceled(ex.CancellationToken);
                }
                catch (Exception ex)
                {
                    done.TrySetException(ex);
                }
            });
        }
        catch (InvalidOperationException)
        {
            done.TrySetException(new ObjectDisposedException(nameof(ModelThread), "The model thread has stopped."));
        }

        return done.Task;
    }

    /// <summary>Runs <paramref name="work"/> on the model thread.</summary>
    public Task Post(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Post<bool>(() =>
        {
            work();
            return true;
        });
    }

    /// <summary>No more work is accepted; the thread ends once the queued work has run.</summary>
    public void Complete() => _work.CompleteAdding();

    private void EnsureStarted()
    {
        lock (_gate)
        {
            if (_callerWillRun || _thread is not null || ThreadId is not null)
            {
                return;
            }

            _thread = new Thread(Drain) { IsBackground = true, Name = _name };
            _thread.Start();
            ThreadId = _thread.ManagedThreadId;
        }
    }

    private void Drain()
    {
        foreach (Action work in _work.GetConsumingEnumerable())
        {
            work();
        }
    }

    /// <summary>Stops accepting work and waits for a dedicated thread to finish what was queued.</summary>
    public void Dispose()
    {
        Complete();
        Thread? thread;
        lock (_gate)
        {
            thread = _thread;
        }

        if (thread is not null && thread != Thread.CurrentThread)
        {
            thread.Join();
        }
    }
}
