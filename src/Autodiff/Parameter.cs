using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// A trainable tensor with a stable dotted name (e.g. <c>down.0.res.0.conv1.weight</c>) and a
/// gradient buffer that lives as long as it does. Gradients accumulate into <see cref="Tensor.Grad"/>
/// across backward passes until <see cref="ZeroGrad"/>.
/// </summary>
public sealed class Parameter : Tensor
{
    private Parameter(string name, ComputeDevice device, int[] shape, DeviceBuffer<float> buffer)
        : base(device, shape, buffer)
    {
        Name = name;
        RequiresGrad = true;
        Grad = Tensor.Zeros(device, shape);
    }

    /// <summary>A zero-initialised parameter.</summary>
    public static Parameter Create(ComputeDevice device, string name, params int[] shape)
    {
        var p = new Parameter(name, device, (int[])shape.Clone(), device.Pool.Rent<float>(CheckedLength(shape)));
        p.Clear();
        return p;
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
