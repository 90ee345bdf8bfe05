using ILGPU;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// A float32 tensor on a device: a shape (NCHW, contiguous, row-major — DESIGN.md §2) and a pooled
/// buffer. Intermediate tensors are owned by a <see cref="Tape"/> and go back to the pool when it is
/// cleared; <see cref="Parameter"/>s and tensors created with <see cref="Tensor.Create"/> are owned by
/// their creator, who disposes them.
/// </summary>
public class Tensor : IDisposable
{
    private DeviceBuffer<float>? buffer;

    internal Tensor(ComputeDevice device, int[] shape, DeviceBuffer<float> buffer)
    {
        Device = device;
        Shape = shape;
        this.buffer = buffer;
        Length = buffer.Length;
    }

    /// <summary>A new tensor of <paramref name="shape"/> from the pool, contents undefined; the caller disposes it.</summary>
    public static Tensor Create(ComputeDevice device, params int[] shape) =>
        new(device, (int[])shape.Clone(), device.Pool.Rent<float>(CheckedLength(shape)));

    /// <summary>A new zeroed tensor; the caller disposes it.</summary>
    public static Tensor Zeros(ComputeDevice device, params int[] shape)
    {
        var t = Create(device, shape);
        t.Clear();
        return t;
    }

    /// <summary>A new tensor holding <paramref name="data"/>; the caller disposes it.</summary>
    public static Tensor FromArray(ComputeDevice device, ReadOnlySpan<float> data, params int[] shape)
    {
        var t = Create(device, shape);
        t.CopyFrom(data);
        return t;
    }

    /// <summary>The device the data lives on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>Number of elements.</summary>
    public int Length { get; }

    /// <summary>Number of dimensions.</summary>
    public int Rank => Shape.Length;

    /// <summary>Dimension <paramref name="axis"/>; negative counts from the end.</summary>
    public int Dim(int axis) => Shape[axis < 0 ? Shape.Length + axis : axis];

    /// <summary>The data as a kernel argument.</summary>
    public ArrayView<float> View => Buffer.View;

    /// <summary>The pooled buffer behind the tensor.</summary>
    public DeviceBuffer<float> Buffer => buffer ?? throw new ObjectDisposedException(nameof(Tensor), $"tensor {ShapeText(Shape)} was released");

    /// <summary>The gradient, same shape; null until a backward pass reaches this tensor.</summary>
    public Tensor? Grad { get; internal set; }

    /// <summary>Whether gradients flow to (and through) this tensor.</summary>
    public bool RequiresGrad { get; internal set; }

    /// <summary>
    /// Makes a leaf tensor (an input the caller owns) collect a gradient: allocates a zeroed
    /// <see cref="Grad"/> that lives as long as the tensor, so it can be read after <see cref="Tape.Backward"/>.
    /// </summary>
    public void RequireGrad()
    {
        RequiresGrad = true;
        Grad ??= Zeros(Device, Shape);
    }

    /// <summary>Sets every element to zero.</summary>
    public void Clear() => Buffer.Clear();

    /// <summary>Copies host data in; the length must match.</summary>
    public void CopyFrom(ReadOnlySpan<float> data)
    {
        if (data.Length != Length)
            throw new ArgumentException($"tensor {ShapeText(Shape)} holds {Length} values, got {data.Length}");
        Buffer.CopyFrom(data);
    }

    /// <summary>Copies the data to the host (waits for the device).</summary>
    public float[] ToArray() => Buffer.ToArray();

    /// <summary>The single value of a one-element tensor.</summary>
    public float ToScalar() => Length == 1 ? ToArray()[0] : throw new InvalidOperationException($"tensor {ShapeText(Shape)} is not a scalar");

    /// <summary>Whether the shapes are equal.</summary>
    public bool SameShape(Tensor other) => Shape.AsSpan().SequenceEqual(other.Shape);

    /// <summary>A view of the same memory under another shape of the same length (no copy; owned by the original).</summary>
    public Tensor Reshape(params int[] shape)
    {
        if (CheckedLength(shape) != Length)
            throw new ArgumentException($"cannot reshape {ShapeText(Shape)} to {ShapeText(shape)}");
        return new ReshapedTensor(this, shape);
    }

    /// <summary>"[2, 3, 4]".</summary>
    public static string ShapeText(int[] shape) => "[" + string.Join(", ", shape) + "]";

    /// <inheritdoc/>
    public override string ToString() => $"Tensor{ShapeText(Shape)}";

    internal static int CheckedLength(int[] shape)
    {
        if (shape.Length == 0) throw new ArgumentException("a tensor needs at least one dimension");
        long n = 1;
        foreach (var d in shape)
        {
            if (d <= 0) throw new ArgumentException($"every dimension must be positive, got {ShapeText(shape)}");
            n *= d;
            if (n > int.MaxValue) throw new ArgumentException($"tensor {ShapeText(shape)} exceeds 2^31 elements (32-bit indices)");
        }
        return (int)n;
    }

    /// <summary>Returns the buffer (and the gradient's) to the pool. Idempotent.</summary>
    public virtual void Dispose()
    {
        buffer?.Dispose();
        buffer = null;
        Grad?.Dispose();
        Grad = null;
        GC.SuppressFinalize(this);
    }

    /// <summary>A reshape: shares the original's buffer and does not return it on dispose.</summary>
    private sealed class ReshapedTensor(Tensor original, int[] shape)
        : Tensor(original.Device, (int[])shape.Clone(), original.Buffer)
    {
        public override void Dispose() { }
    }
}
