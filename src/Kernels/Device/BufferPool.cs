using ILGPU;
using ILGPU.Runtime;

namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// A device buffer of exactly <see cref="Length"/> elements, rented from a <see cref="BufferPool"/>.
/// Disposing it hands the memory back to the pool (it is not freed), so a training or sampling step
/// that rents the same shapes every time allocates nothing after its first run (DESIGN.md §2).
/// A <see cref="Slice"/> is a buffer too: a window on its parent's memory that the parent owns (one flat
/// buffer holds every parameter, each parameter a slice of it).
/// </summary>
public sealed class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    private readonly BufferPool pool;
    private readonly ArrayView1D<T, Stride1D.Dense> memory;
    private readonly DeviceBuffer<T>? parent;
    private bool returned;

    internal DeviceBuffer(BufferPool pool, MemoryBuffer1D<T, Stride1D.Dense> memory)
    {
        this.pool = pool;
        this.memory = memory.View;
        Length = checked((int)memory.Length);
    }

    private DeviceBuffer(DeviceBuffer<T> parent, int offset, int length)
    {
        pool = parent.pool;
        this.parent = parent.parent ?? parent;
        memory = parent.memory.SubView(offset, length);
        Offset = parent.Offset + offset;
        Length = length;
    }

    /// <summary>Number of elements.</summary>
    public int Length { get; }

    /// <summary>Where a slice starts in its root buffer (0 for a pooled buffer).</summary>
    public int Offset { get; }

    /// <summary>Whether this is a <see cref="Slice"/> of another buffer (which owns the memory).</summary>
    public bool IsSlice => parent is not null;

    /// <summary>The whole buffer as a kernel argument.</summary>
    public ArrayView<T> View => returned || parent is { returned: true }
        ? throw new ObjectDisposedException(nameof(DeviceBuffer<T>), "this buffer was returned to the pool")
        : memory;

    /// <summary>
    /// Elements [<paramref name="offset"/>, offset + <paramref name="length"/>) as a buffer of their own: no copy,
    /// no allocation; disposing the slice does nothing (the memory stays this buffer's).
    /// </summary>
    public DeviceBuffer<T> Slice(int offset, int length)
    {
        if (offset < 0 || length <= 0 || (long)offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"slice [{offset}, {(long)offset + length}) is outside a buffer of {Length} elements");
        return new DeviceBuffer<T>(this, offset, length);
    }

    internal void MarkRented() => returned = false;

    /// <summary>Sets every element to zero, ordered on the device's stream (one memset: counted as a clear).</summary>
    public void Clear()
    {
        pool.Counters.CountClear();
        View.MemSetToZero(pool.Stream);
    }

    /// <summary>Copies host data in (length must match); waits for the copy (one synchronisation).</summary>
    public void CopyFrom(ReadOnlySpan<T> data)
    {
        if (data.Length != Length)
            throw new ArgumentException($"expected {Length} elements, got {data.Length}");
        pool.Counters.CountSynchronization();
        ((ArrayView1D<T, Stride1D.Dense>)View).CopyFromCPU(pool.Stream, data);
        pool.Stream.Synchronize();
    }

    /// <summary>Copies the buffer into <paramref name="destination"/> (length must match) after the queued work; one synchronisation, no allocation.</summary>
    public void CopyTo(Span<T> destination)
    {
        if (destination.Length != Length)
            throw new ArgumentException($"expected room for {Length} elements, got {destination.Length}");
        pool.Counters.CountSynchronization();
        var view = (ArrayView1D<T, Stride1D.Dense>)View;
        pool.Stream.Synchronize();
        view.CopyToCPU(pool.Stream, destination);
        pool.Stream.Synchronize();
    }

    /// <summary>Copies the buffer to a new host array; waits for the device (one synchronisation).</summary>
    public T[] ToArray()
    {
        var result = new T[Length];
        CopyTo(result);
        return result;
    }

    /// <summary>Hands the memory back to the pool. Idempotent; nothing for a slice (its root owns the memory).</summary>
    public void Dispose()
    {
        if (returned || parent is not null) return;
        returned = true;
        pool.Return(this);
    }
}

/// <summary>
/// A pool of device buffers keyed by (element type, exact length). ILGPU has no allocator cache of its
/// own and a device allocation synchronises the GPU, so every tensor comes from here.
/// <see cref="AllocationCount"/> counts real device allocations: tests use it to prove that a
/// steady-state step allocates nothing.
/// </summary>
public sealed class BufferPool : IDisposable
{
    private readonly Accelerator accelerator;
    private readonly Dictionary<(Type, int), Stack<object>> free = new();
    private readonly List<IDisposable> all = new();
    private readonly Lock gate = new();

    internal BufferPool(Accelerator accelerator, AcceleratorStream stream, DeviceCounters counters)
    {
        this.accelerator = accelerator;
        Stream = stream;
        Counters = counters;
    }

    /// <summary>The owning device's counters (clears and host copies are counted here).</summary>
    internal DeviceCounters Counters { get; }

    /// <summary>The stream every pooled operation (clears, copies) is ordered on.</summary>
    public AcceleratorStream Stream { get; }

    /// <summary>Number of real device allocations made so far.</summary>
    public long AllocationCount { get; private set; }

    /// <summary>Bytes held by the pool (rented or free).</summary>
    public long BytesHeld { get; private set; }

    /// <summary>Buffers currently rented and not yet returned.</summary>
    public int Outstanding { get; private set; }

    /// <summary>Rents a buffer of exactly <paramref name="length"/> elements; contents are undefined.</summary>
    public DeviceBuffer<T> Rent<T>(int length) where T : unmanaged
    {
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length), $"buffer length must be positive, got {length}");
        lock (gate)
        {
            Outstanding++;
            if (free.TryGetValue((typeof(T), length), out var stack) && stack.Count > 0)
            {
                var reused = (DeviceBuffer<T>)stack.Pop();
                reused.MarkRented();
                return reused;
            }
            var memory = accelerator.Allocate1D<T>(length);
            AllocationCount++;
            BytesHeld += (long)length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
            all.Add(memory);
            return new DeviceBuffer<T>(this, memory);
        }
    }

    /// <summary>Rents a buffer and sets it to zero.</summary>
    public DeviceBuffer<T> RentZeroed<T>(int length) where T : unmanaged
    {
        var buffer = Rent<T>(length);
        buffer.Clear();
        return buffer;
    }

    internal void Return<T>(DeviceBuffer<T> buffer) where T : unmanaged
    {
        lock (gate)
        {
            Outstanding--;
            var key = (typeof(T), buffer.Length);
            if (!free.TryGetValue(key, out var stack)) free[key] = stack = new Stack<object>();
            stack.Push(buffer);
        }
    }

    /// <summary>Frees every device allocation the pool ever made.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            foreach (var memory in all) memory.Dispose();
            all.Clear();
            free.Clear();
        }
    }
}
