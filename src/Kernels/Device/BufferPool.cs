using ILGPU;
using ILGPU.Runtime;

namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// A device buffer of exactly <see cref="Length"/> elements, rented from a <see cref="BufferPool"/>.
/// Disposing it hands the memory back to the pool (it is not freed), so a training or sampling step
/// that rents the same shapes every time allocates nothing after its first run (DESIGN.md §2).
/// </summary>
public sealed class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    private readonly BufferPool pool;
    internal readonly MemoryBuffer1D<T, Stride1D.Dense> Memory;
    private bool returned;

    internal DeviceBuffer(BufferPool pool, MemoryBuffer1D<T, Stride1D.Dense> memory)
    {
        this.pool = pool;
        Memory = memory;
        Length = checked((int)memory.Length);
    }

    /// <summary>Number of elements.</summary>
    public int Length { get; }

    /// <summary>The whole buffer as a kernel argument.</summary>
    public ArrayView<T> View => returned
        ? throw new ObjectDisposedException(nameof(DeviceBuffer<T>), "this buffer was returned to the pool")
        : Memory.View;

    internal void MarkRented() => returned = false;

    /// <summary>Sets every element to zero, ordered on the device's stream.</summary>
    public void Clear() => Memory.View.MemSetToZero(pool.Stream);

    /// <summary>Copies host data in (length must match); waits for the copy.</summary>
    public void CopyFrom(ReadOnlySpan<T> data)
    {
        if (data.Length != Length)
            throw new ArgumentException($"expected {Length} elements, got {data.Length}");
        Memory.View.CopyFromCPU(pool.Stream, data);
        pool.Stream.Synchronize();
    }

    /// <summary>Copies the buffer to a new host array; waits for the device.</summary>
    public T[] ToArray()
    {
        var result = new T[Length];
        pool.Stream.Synchronize();
        Memory.View.CopyToCPU(pool.Stream, result);
        pool.Stream.Synchronize();
        return result;
    }

    /// <summary>Hands the memory back to the pool. Idempotent.</summary>
    public void Dispose()
    {
        if (returned) return;
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

    internal BufferPool(Accelerator accelerator, AcceleratorStream stream)
    {
        this.accelerator = accelerator;
        Stream = stream;
    }

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
