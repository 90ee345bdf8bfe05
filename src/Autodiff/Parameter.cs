using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// A trainable tensor with a stable dotted name (e.g. <c>down.0.res.0.conv1.weight</c>) and a
/// gradient buffer that lives as long as it does. Gradients accumulate into <see cref="Tensor.Grad"/>
/// across backward passes until <see cref="ZeroGrad"/>.
/// </summary>
public sealed class Parameter : Tensor
{
    private Parameter(string name, ComputeDevice device, int[] shape, DeviceBuffer<float> buffer, Tensor gradient)
        : base(device, shape, buffer)
    {
        Name = name;
        RequiresGrad = true;
        Grad = gradient;
    }

    /// <summary>A zero-initialised parameter.</summary>
    public static Parameter Create(ComputeDevice device, string name, params int[] shape)
    {
        var p = new Parameter(name, device, (int[])shape.Clone(), device.Pool.Rent<float>(CheckedLength(shape)), Tensor.Zeros(device, shape));
        p.Clear();
        return p;
    }

    /// <summary>
    /// A parameter whose values and gradient are windows on buffers someone else owns (a model's flat
    /// parameter and gradient buffers: each parameter a slice of each). Both slices must hold exactly the
    /// shape's elements; disposing the parameter leaves the memory to its owner. Contents are left as they are.
    /// </summary>
    public static Parameter Window(ComputeDevice device, string name, int[] shape, DeviceBuffer<float> values, DeviceBuffer<float> gradient)
    {
        int n = CheckedLength(shape);
        if (values.Length != n || gradient.Length != n)
            throw new ArgumentException($"parameter {name} {ShapeText(shape)} needs {n} values and gradients, got {values.Length} and {gradient.Length}");
        var copy = (int[])shape.Clone();
        return new Parameter(name, device, copy, values, new Tensor(device, copy, gradient));
    }

    /// <summary>The dotted name used in checkpoints (docs/checkpoint-format.md).</summary>
    public string Name { get; }

    /// <summary>The gradient buffer (never null for a parameter).</summary>
    public Tensor Gradient => Grad!;

    /// <summary>Sets the gradient to zero.</summary>
    public void ZeroGrad() => Grad!.Clear();

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {ShapeText(Shape)}";
}
