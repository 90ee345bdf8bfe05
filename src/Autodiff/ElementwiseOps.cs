using ILGPU;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Resample;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// Differentiable elementwise and resampling ops (any unary operator struct — the activations —, add, scale, per-channel bias, channel concat,
/// nearest ×2 upsampling, dropout) and the timestep embedding. Each runs its forward kernel from
/// <see cref="ElementwiseKernels"/> / <see cref="ResampleKernels"/> and records a backward step that
/// ADDS into the inputs' gradients. Ops never synchronise.
/// </summary>
public static class ElementwiseOps
{
    private static ElementwiseKernels K(Tape tape) => tape.Device.Kernels<ElementwiseKernels>();

    /// <summary>
    /// y = op(x) elementwise, any shape; the backward ADDS dy·op′(x) (<see cref="IUnaryOp.Backward"/>).
    /// Every activation is this op with its operator struct.
    /// </summary>
    public static Tensor Unary<TOp>(this Tape tape, Tensor x, TOp op) where TOp : struct, IUnaryOp
    {
        var k = K(tape);
        var y = tape.NewTensor(x.Shape);
        k.Unary(op, x.View, y.View);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => k.UnaryBackward(op, x.View, dy.View, tape.GradOf(x).View));
        return y;
    }

    /// <summary>The activation <paramref name="activation"/> applied to x (see <see cref="Activation"/>).</summary>
    public static Tensor Activate(this Tape tape, Tensor x, Activation activation) => activation switch
    {
        Activation.Silu => tape.Unary(x, new SiluOp()),
        Activation.Gelu => tape.Unary(x, new GeluOp()),
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "unknown activation"),
    };

    /// <summary>y = x·σ(x), any shape.</summary>
    public static Tensor Silu(this Tape tape, Tensor x) => tape.Unary(x, new SiluOp());

    /// <summary>y = a + b; a and b must have the same shape.</summary>
    public static Tensor Add(this Tape tape, Tensor a, Tensor b)
    {
        if (!a.SameShape(b))
            throw new ArgumentException($"add: shapes must match, got {Tensor.ShapeText(a.Shape)} and {Tensor.ShapeText(b.Shape)}");
        var k = K(tape);
        var y = tape.NewTensor(a.Shape);
        k.Add(a.View, b.View, y.View);
        if (tape.NeedsGrad(a, b))
            tape.Record(y, dy =>
            {
                if (a.RequiresGrad) k.AddInto(tape.GradOf(a).View, dy.View);
                if (b.RequiresGrad) k.AddInto(tape.GradOf(b).View, dy.View);
            });
        return y;
    }

    /// <summary>y = s·x, any shape.</summary>
    public static Tensor Scale(this Tape tape, Tensor x, float s)
    {
        var k = K(tape);
        var y = tape.NewTensor(x.Shape);
        k.Scale(x.View, y.View, s);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => k.ScaleBackward(dy.View, tape.GradOf(x).View, s));
        return y;
    }

    /// <summary>
    /// y[n,c,…] = x[n,c,…] + v[n,c]: x [N,C,H,W] (any rank ≥ 2; trailing dims are the broadcast ones),
    /// v [N,C] — e.g. the projected time embedding added to a ResBlock's feature map.
    /// </summary>
    public static Tensor AddChannelVector(this Tape tape, Tensor x, Tensor v)
    {
        if (x.Rank < 2 || v.Rank != 2 || v.Shape[0] != x.Shape[0] || v.Shape[1] != x.Shape[1])
            throw new ArgumentException($"add-channel-vector: expected x [N, C, ...] and v [N, C], got x {Tensor.ShapeText(x.Shape)} and v {Tensor.ShapeText(v.Shape)}");
        int n = x.Shape[0], c = x.Shape[1], spatial = x.Length / (n * c);
        var k = K(tape);
        var y = tape.NewTensor(x.Shape);
        k.AddChannelVector(x.View, v.View, y.View, n, c, spatial);
        if (tape.NeedsGrad(x, v))
            tape.Record(y, dy => k.AddChannelVectorBackward(dy.View,
                x.RequiresGrad ? tape.GradOf(x).View : default,
                v.RequiresGrad ? tape.GradOf(v).View : default,
                n, c, spatial));
        return y;
    }

    /// <summary>
    /// Channel concat: a [N,Ca,H,W] ++ b [N,Cb,H,W] → [N,Ca+Cb,H,W], a first (any rank ≥ 2; all dims but
    /// the channel one must match).
    /// </summary>
    public static Tensor Concat(this Tape tape, Tensor a, Tensor b)
    {
        bool ok = a.Rank >= 2 && a.Rank == b.Rank && a.Shape[0] == b.Shape[0];
        for (int d = 2; ok && d < a.Rank; d++) ok = a.Shape[d] == b.Shape[d];
        if (!ok)
            throw new ArgumentException($"concat: expected [N, Ca, ...] and [N, Cb, ...] with equal N and trailing dims, got {Tensor.ShapeText(a.Shape)} and {Tensor.ShapeText(b.Shape)}");
        int n = a.Shape[0], ca = a.Shape[1], cb = b.Shape[1], spatial = a.Length / (n * ca);
        var shape = (int[])a.Shape.Clone();
        shape[1] = ca + cb;
        var k = K(tape);
        var y = tape.NewTensor(shape);
        k.Concat(a.View, b.View, y.View, n, ca, cb, spatial);
        if (tape.NeedsGrad(a, b))
            tape.Record(y, dy => k.ConcatBackward(dy.View,
                a.RequiresGrad ? tape.GradOf(a).View : default,
                b.RequiresGrad ? tape.GradOf(b).View : default,
                n, ca, cb, spatial));
        return y;
    }

    /// <summary>Nearest-neighbour ×2 upsampling: x [N,C,H,W] → [N,C,2H,2W].</summary>
    public static Tensor Upsample2x(this Tape tape, Tensor x)
    {
        if (x.Rank != 4)
            throw new ArgumentException($"upsample: expected x [N, C, H, W], got {Tensor.ShapeText(x.Shape)}");
        int n = x.Shape[0], c = x.Shape[1], h = x.Shape[2], w = x.Shape[3];
        var k = tape.Device.Kernels<ResampleKernels>();
        var y = tape.NewTensor(n, c, 2 * h, 2 * w);
        k.Upsample2x(x.View, y.View, n, c, h, w);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => k.Upsample2xBackward(dy.View, tape.GradOf(x).View, n, c, h, w));
        return y;
    }

    /// <summary>
    /// Inverted dropout: keeps element i with probability 1 − p (iff Philox.Uniform(key, i) ≥ p) and
    /// scales it by 1/(1 − p). Returns <paramref name="x"/> itself when the tape is not training or p == 0.
    /// The caller advances <paramref name="key"/> (by x.Length) for the next draw; the backward regenerates
    /// the mask from the key, so no mask is stored.
    /// </summary>
    public static Tensor Dropout(this Tape tape, Tensor x, float p, PhiloxKey key)
    {
        if (!(p >= 0f && p < 1f))
            throw new ArgumentOutOfRangeException(nameof(p), $"dropout probability must be in [0, 1), got {p}");
        if (!tape.Training || p == 0f) return x;
        var k = K(tape);
        var y = tape.NewTensor(x.Shape);
        k.Dropout(x.View, y.View, p, key);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => k.DropoutBackward(dy.View, tape.GradOf(x).View, p, key));
        return y;
    }

    /// <summary>
    /// The sinusoidal timestep embedding [n, dim] of DESIGN.md §4 for the 0-based steps in
    /// <paramref name="t"/> (its first n entries): row i = [sin(t_i f_0..f_{half−1}), cos(t_i f_0..f_{half−1})],
    /// half = dim/2, f_j = exp(−ln(10000)·j/(half − 1)). dim must be even and ≥ 4. No gradient.
    /// </summary>
    public static Tensor TimestepSinusoid(this Tape tape, ArrayView<int> t, int n, int dim)
    {
        if (n <= 0) throw new ArgumentException($"timestep sinusoid: batch size must be positive, got {n}");
        if (dim < 4 || dim % 2 != 0) throw new ArgumentException($"timestep sinusoid: dim must be even and at least 4, got {dim}");
        var y = tape.NewTensor(n, dim);
        K(tape).TimestepSinusoid(t, y.View, n, dim);
        return y;
    }
}

/// <summary>
/// The network's nonlinearity, chosen in the config; <see cref="ElementwiseOps.Activate"/> maps each to its
/// operator struct (Kernels/Elementwise/ElementwiseOps.cs). Adding one: the struct, an entry here and its arm there.
/// </summary>
[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<Activation>))]
public enum Activation
{
    /// <summary>SiLU / swish, x·σ(x) (the DDPM U-Net's).</summary>
    Silu,

    /// <summary>GELU, tanh approximation (PyTorch <c>approximate='tanh'</c>).</summary>
    Gelu,
}
