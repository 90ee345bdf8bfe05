using ILGPU;
using IlgpuDdpm.Kernels.Conv;

namespace IlgpuDdpm.Autodiff;

/// <summary>The differentiable 2-D convolution (kernels: <see cref="ConvKernels"/>).</summary>
public static class ConvOps
{
    /// <summary>
    /// y = conv2d(x, weight) + bias: x [N, Cin, H, W], weight [Cout, Cin, K, K] (K odd), bias [Cout] or null,
    /// zero padding <paramref name="padding"/> on every side (−1 means K/2), <paramref name="stride"/> (1 or 2 in
    /// the U-Net; any positive value works) in both directions; y [N, Cout, Ho, Wo] with Ho = (H + 2·padding − K) / stride + 1.
    /// Records gradients for x (transposed convolution), weight and bias when they require one.
    /// </summary>
    public static Tensor Conv2d(this Tape tape, Tensor x, Tensor weight, Tensor? bias, int stride = 1, int padding = -1)
    {
        var s = ShapeOf(x, weight, bias, stride, padding);
        var y = tape.NewTensor(s.N, s.Cout, s.Ho, s.Wo);
        var kernels = tape.Device.Kernels<ConvKernels>();
        kernels.Forward(x.View, weight.View, bias?.View ?? ArrayView<float>.Empty, y.View, s);
        if (tape.NeedsGrad(x, weight, bias))
        {
            tape.Record(y, dy =>
            {
                if (x.RequiresGrad) kernels.BackwardInput(dy.View, weight.View, tape.GradOf(x).View, s);
                if (weight.RequiresGrad) kernels.BackwardWeight(x.View, dy.View, tape.GradOf(weight).View, s);
                if (bias is not null && bias.RequiresGrad) kernels.BackwardBias(dy.View, tape.GradOf(bias).View, s);
            });
        }
        return y;
    }

    /// <summary>Validates the operands (one-line <see cref="ArgumentException"/>s) and returns the kernels' shape.</summary>
    private static ConvShape ShapeOf(Tensor x, Tensor weight, Tensor? bias, int stride, int padding)
    {
        if (x.Rank != 4)
            throw new ArgumentException($"conv2d input must be [N, Cin, H, W], got {Tensor.ShapeText(x.Shape)}");
        if (weight.Rank != 4 || weight.Dim(2) != weight.Dim(3))
            throw new ArgumentException($"conv2d weight must be [Cout, Cin, K, K], got {Tensor.ShapeText(weight.Shape)}");
        if (weight.Dim(1) != x.Dim(1))
            throw new ArgumentException($"conv2d weight {Tensor.ShapeText(weight.Shape)} expects {weight.Dim(1)} input channels, input {Tensor.ShapeText(x.Shape)} has {x.Dim(1)}");
        if (bias is not null && (bias.Rank != 1 || bias.Length != weight.Dim(0)))
            throw new ArgumentException($"conv2d bias must be [{weight.Dim(0)}] for weight {Tensor.ShapeText(weight.Shape)}, got {Tensor.ShapeText(bias.Shape)}");
        return new ConvShape(x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3), weight.Dim(0), weight.Dim(2), stride, padding);
    }
}
