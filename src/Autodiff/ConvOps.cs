using ILGPU;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Elementwise;

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
    public static Tensor Conv2d(this Tape tape, Tensor x, Tensor weight, Tensor? bias, int stride = 1, int padding = -1) =>
        tape.Conv2d(x, weight, bias, null, stride, padding);

    /// <summary>
    /// y = conv2d(x, weight) + bias + <paramref name="addend"/>, the add fused into the convolution's epilogue
    /// (<see cref="ConvAddend"/>): addend [N, Cout, Ho, Wo] (a residual) or [N, Cout] (broadcast over each output
    /// plane: the time embedding), or null for none. The same bits as the convolution followed by
    /// <c>tape.Add</c> or <c>tape.AddChannelVector</c>; the addend's gradient is dy, or dy summed over each plane.
    /// </summary>
    public static Tensor Conv2d(this Tape tape, Tensor x, Tensor weight, Tensor? bias, Tensor? addend, int stride = 1, int padding = -1)
    {
        var s = ShapeOf(x, weight, bias, stride, padding);
        var kind = AddendOf(addend, s);
        var y = tape.NewTensor(s.N, s.Cout, s.Ho, s.Wo);
        var kernels = tape.Device.Kernels<ConvKernels>();
        kernels.Forward(x.View, weight.View, bias?.View ?? ArrayView<float>.Empty, y.View, s, addend?.View ?? ArrayView<float>.Empty, kind);
        if (tape.NeedsGrad(x, weight, bias) || addend is { RequiresGrad: true })
        {
            tape.Record(y, dy =>
            {
                // dx, dw and db, each only when wanted; on a GPU the input and weight gradients share a launch and db is a column of dw's GEMM
                kernels.Backward(x.View, weight.View, dy.View, x.RequiresGrad ? tape.GradOf(x).View : default,
                                 weight.RequiresGrad ? tape.GradOf(weight).View : default, bias is { RequiresGrad: true } ? tape.GradOf(bias).View : default, s);
                if (addend is not null && addend.RequiresGrad)
                {
                    if (kind == ConvAddend.SameShape) tape.AddGrad(addend, dy); // dy itself when the addend has no gradient yet
                    else tape.Device.Kernels<ElementwiseKernels>().AddChannelVectorBackward(dy.View, default, tape.GradOf(addend).View, s.N, s.Cout, s.Ho * s.Wo);
                }
            });
        }
        return y;
    }

    private static ConvAddend AddendOf(Tensor? addend, ConvShape s)
    {
        if (addend is null) return ConvAddend.None;
        if (addend.Rank == 4 && addend.Dim(0) == s.N && addend.Dim(1) == s.Cout && addend.Dim(2) == s.Ho && addend.Dim(3) == s.Wo) return ConvAddend.SameShape;
        if (addend.Rank == 2 && addend.Dim(0) == s.N && addend.Dim(1) == s.Cout) return ConvAddend.PerChannel;
        throw new ArgumentException($"conv2d addend must be [{s.N}, {s.Cout}, {s.Ho}, {s.Wo}] (the output's shape) or [{s.N}, {s.Cout}], got {Tensor.ShapeText(addend.Shape)}");
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
