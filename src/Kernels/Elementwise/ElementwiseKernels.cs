using System.Runtime.CompilerServices;
using ILGPU;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Elementwise;

/// <summary>
/// Memory-bound elementwise kernels: any <see cref="IUnaryOp"/> (SiLU, GELU, scale, copy) and its backward,
/// any <see cref="IBinaryOp"/> element-wise (add, accumulate) or broadcast over channels (per-channel bias),
/// channel concat, Philox dropout, timestep sinusoid and fill — each forward next to its backward.
/// <para>
/// Parallelisation: every kernel is an <see cref="IElementKernel"/> run as a grid-stride loop
/// (<see cref="ComputeDevice.LaunchElements{TElement}(GridStride, int, in TElement)"/>) sized by
/// <see cref="GridStride"/>.
/// </para>
/// <para>
/// Backward methods ADD into their gradient outputs (dx += …): the tape hands out zeroed gradient buffers,
/// so a tensor feeding two ops receives the sum. No atomics; every reduction is one thread per output
/// element in a fixed order, so results are bit-for-bit repeatable.
/// </para>
/// </summary>
public sealed class ElementwiseKernels : GridStrideFamily, IKernelFamily<ElementwiseKernels>
{
    /// <summary>
    /// Self-check probes. Tolerance: SiLU's exp; sin/cos of t·f up to ~1000 rad in the timestep sinusoid, where GPU
    /// sine/cosine lose accuracy with the size of the argument.
    /// </summary>
    public static KernelProbes Probes { get; } = new("Elementwise", 1e-3,
    [
        .. new[] { (2, 16, 8 * 8), (3, 5, 7 * 9) }.Select(s => new KernelProbe($"SiLU, Add, Scale, AddChannelVector, Concat, Dropout (and backward) {s}", k =>
        {
            var (e, (n, c, hw)) = (k.Kernels<ElementwiseKernels>(), s);
            int len = n * c * hw;
            var (x, b, dy, key) = (k.In(len, -6f, 6f), k.In(len), k.In(len), new PhiloxKey(77, 3, 11));
            e.Silu(x.View, k.Out(len).View);
            e.SiluBackward(x.View, dy.View, k.Acc(len).View);
            var sum = k.Out(len);
            e.Add(x.View, b.View, sum.View);
            e.AddScaledInto(sum.View, dy.View, -0.37f);
            e.Scale(x.View, k.Out(len).View, 1.25f);
            e.AddChannelVector(x.View, k.In(n * c).View, k.Out(len).View, n, c, hw);
            e.AddChannelVectorBackward(dy.View, k.Out(len).View, k.Out(n * c).View, n, c, hw);
            var cat = k.Out(2 * len);
            e.Concat(x.View, b.View, cat.View, n, c, c, hw);
            e.ConcatBackward(cat.View, k.Out(len).View, k.Out(len).View, n, c, c, hw);
            e.Dropout(x.View, k.Out(len).View, 0.1f, key);
            e.DropoutBackward(dy.View, k.Out(len).View, 0.1f, key);
        })),
        .. new[] { 16, 128 }.Select(dim => new KernelProbe($"TimestepSinusoid dim={dim}, t in 0..999", k =>
        {
            int[] steps = [0, 1, 2, 17, 250, 499, 500, 998, 999];
            k.Kernels<ElementwiseKernels>().TimestepSinusoid(k.Upload(steps).View, k.Out(steps.Length * dim).View, steps.Length, dim);
        })),
    ]);

    private ElementwiseKernels(ComputeDevice device, GridStride launch) : base(device, launch) { }

    /// <inheritdoc/>
    public static ElementwiseKernels Create(ComputeDevice device) => new(device, device.ElementShape);

    /// <summary>A family with a chosen launch shape (tests run the GPU's, and odd ones, on the CPU).</summary>
    internal static ElementwiseKernels CreateWith(ComputeDevice device, GridStride launch) => new(device, launch);

    // ---------------------------------------------------------------- unary ops
    // x [L] -> y [L]:  y = op.Forward(x)
    internal readonly struct UnaryKernel<TOp>(TOp op, ArrayView<float> x, ArrayView<float> y) : IElementKernel where TOp : struct, IUnaryOp
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Element(int e) => y[e] = op.Forward(x[e]);
    }

    // x, dy [L] -> dx [L] (ADDS):  dx += dy·op′(x)
    internal readonly struct UnaryBackwardKernel<TOp>(TOp op, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx) : IElementKernel where TOp : struct, IUnaryOp
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Element(int e) => dx[e] += op.Backward(x[e], dy[e]);
    }

    /// <summary>y = op(x) elementwise; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Unary<TOp>(TOp op, ArrayView<float> x, ArrayView<float> y) where TOp : struct, IUnaryOp
    {
        int n = Length(x, $"{typeof(TOp).Name} x");
        Expect(y, n, $"{typeof(TOp).Name} y (same length as x)");
        Run(n, new UnaryKernel<TOp>(op, x, y));
    }

    /// <summary>Backward of <see cref="Unary{TOp}"/>: dx += dy·op′(x). ADDS into <paramref name="dx"/>.</summary>
    public void UnaryBackward<TOp>(TOp op, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx) where TOp : struct, IUnaryOp
    {
        int n = Length(x, $"{typeof(TOp).Name} x");
        Expect(dy, n, $"{typeof(TOp).Name} dy (same length as x)");
        Expect(dx, n, $"{typeof(TOp).Name} dx (same length as x)");
        Run(n, new UnaryBackwardKernel<TOp>(op, x, dy, dx));
    }

    /// <summary>y = x·σ(x) elementwise; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Silu(ArrayView<float> x, ArrayView<float> y) => Unary(new SiluOp(), x, y);

    /// <summary>SiLU backward: dx += dy·σ(x)(1 + x(1 − σ(x))). ADDS into <paramref name="dx"/>.</summary>
    public void SiluBackward(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx) => UnaryBackward(new SiluOp(), x, dy, dx);

    /// <summary>y = s·x elementwise; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Scale(ArrayView<float> x, ArrayView<float> y, float s) => Unary(new ScaleOp(s), x, y);

    /// <summary>Scale backward: dx += s·dy. ADDS into <paramref name="dx"/>.</summary>
    public void ScaleBackward(ArrayView<float> dy, ArrayView<float> dx, float s) => AddScaledInto(dx, dy, s);

    /// <summary>dst = src (same length), ordered on the device stream.</summary>
    public void Copy(ArrayView<float> src, ArrayView<float> dst) => Unary(new IdentityOp(), src, dst);

    // ---------------------------------------------------------------- binary ops
    // a, b [L] -> y [L]:  y = op(a, b)
    internal readonly struct BinaryKernel<TOp>(TOp op, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) : IElementKernel where TOp : struct, IBinaryOp
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Element(int e) => y[e] = op.Apply(a[e], b[e]);
    }

    // x [R·S], v [R] -> y [R·S]:  y[r,s] = op(x[r,s], v[r])   (R = N·C rows of S = H·W: a per-channel broadcast)
    internal readonly struct BroadcastKernel<TOp>(TOp op, ArrayView<float> x, ArrayView<float> v, ArrayView<float> y, int spatial) : IElementKernel where TOp : struct, IBinaryOp
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Element(int e) => y[e] = op.Apply(x[e], v[e / spatial]);
    }

    /// <summary>y = op(a, b) elementwise; <paramref name="y"/> may alias an input.</summary>
    public void Binary<TOp>(TOp op, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) where TOp : struct, IBinaryOp
    {
        int n = Length(a, $"{typeof(TOp).Name} a");
        Expect(b, n, $"{typeof(TOp).Name} b (same length as a)");
        Expect(y, n, $"{typeof(TOp).Name} y (same length as a)");
        Run(n, new BinaryKernel<TOp>(op, a, b, y));
    }

    /// <summary>y = a + b elementwise; <paramref name="y"/> may alias an input.</summary>
    public void Add(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => Binary(new AddOp(), a, b, y);

    /// <summary>
    /// dst += src elementwise. This is Add's backward (call it with da and with db, each with dy) and the
    /// accumulate used wherever a gradient ADDS into a buffer.
    /// </summary>
    public void AddInto(ArrayView<float> dst, ArrayView<float> src) => Binary(new AddOp(), dst, src, dst);

    /// <summary>dst += s·src elementwise.</summary>
    public void AddScaledInto(ArrayView<float> dst, ArrayView<float> src, float s) => Binary(new AddScaledOp(s), dst, src, dst);

    /// <summary>y[n,c,s] = x[n,c,s] + v[n,c] for x [N,C,S] (S = H·W), v [N,C].</summary>
    public void AddChannelVector(ArrayView<float> x, ArrayView<float> v, ArrayView<float> y, int n, int c, int spatial)
    {
        int len = Product(n, c, spatial, "add-channel-vector");
        Expect(x, len, $"add-channel-vector x [{n}, {c}, {spatial}]");
        Expect(v, (long)n * c, $"add-channel-vector v [{n}, {c}]");
        Expect(y, len, $"add-channel-vector y [{n}, {c}, {spatial}]");
        Run(len, new BroadcastKernel<AddOp>(new AddOp(), x, v, y, spatial));
    }

    /// <summary>
    /// AddChannelVector backward, ADDING into the gradients: dx += dy; dv[n,c] += Σ_s dy[n,c,s]
    /// (the deterministic row reduction of <see cref="ReduceKernels"/>). Pass <c>default</c> for a gradient that is not wanted.
    /// </summary>
    public void AddChannelVectorBackward(ArrayView<float> dy, ArrayView<float> dx, ArrayView<float> dv, int n, int c, int spatial)
    {
        int len = Product(n, c, spatial, "add-channel-vector backward");
        Expect(dy, len, $"add-channel-vector dy [{n}, {c}, {spatial}]");
        if (dx.Length > 0)
        {
            Expect(dx, len, $"add-channel-vector dx [{n}, {c}, {spatial}]");
            AddInto(dx, dy);
        }
        if (dv.Length > 0)
        {
            Expect(dv, (long)n * c, $"add-channel-vector dv [{n}, {c}]");
            Device.Kernels<ReduceKernels>().Rows(new ValueTerm(dy), new AddSink(dv), n * c, spatial);
        }
    }

    // ---------------------------------------------------------------- Concat (channels)
    // a [N,Ca,S], b [N,Cb,S] -> y [N,Ca+Cb,S]:  y[n, c<Ca] = a[n,c];  y[n, Ca+c] = b[n,c]
    // With rowA = Ca·S, rowB = Cb·S: output element e lies in batch n = e / (rowA + rowB) at r = e − n·(rowA + rowB).
    internal readonly struct ConcatKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int rowA, int rowB) : IElementKernel
    {
        public void Element(int e)
        {
            int row = rowA + rowB;
            int batch = e / row;
            int r = e - batch * row;
            y[e] = r < rowA ? a[batch * rowA + r] : b[batch * rowB + (r - rowA)];
        }
    }

    // Concat's backward, both parts in one launch over dy (issue 9): dy [N,Ca+Cb,S] -> da [N,Ca,S], db [N,Cb,S] (ADDS),
    // da[n,c,s] += dy[n,c,s], db[n,c,s] += dy[n,Ca+c,s]; an unwanted part (want 0) is skipped. Indices as ConcatKernel's.
    internal readonly struct ConcatBackwardKernel(ArrayView<float> dy, ArrayView<float> da, ArrayView<float> db, int rowA, int rowB, int wantA, int wantB) : IElementKernel
    {
        public void Element(int e)
        {
            int row = rowA + rowB;
            int batch = e / row;
            int r = e - batch * row;
            if (r < rowA)
            {
                if (wantA != 0) da[batch * rowA + r] += dy[e];
            }
            else if (wantB != 0) db[batch * rowB + (r - rowA)] += dy[e];
        }
    }

    /// <summary>Channel concat: a [N,Ca,S] ++ b [N,Cb,S] → y [N,Ca+Cb,S], a first.</summary>
    public void Concat(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int n, int ca, int cb, int spatial)
    {
        int lenA = Product(n, ca, spatial, "concat a");
        int lenB = Product(n, cb, spatial, "concat b");
        int len = Product(n, ca + cb, spatial, "concat y");
        Expect(a, lenA, $"concat a [{n}, {ca}, {spatial}]");
        Expect(b, lenB, $"concat b [{n}, {cb}, {spatial}]");
        Expect(y, len, $"concat y [{n}, {ca + cb}, {spatial}]");
        Run(len, new ConcatKernel(a, b, y, ca * spatial, cb * spatial));
    }

    /// <summary>
    /// Concat backward (the split), ADDING into the gradients: da += dy[:, :Ca], db += dy[:, Ca:].
    /// Pass <c>default</c> for a gradient that is not wanted.
    /// </summary>
    public void ConcatBackward(ArrayView<float> dy, ArrayView<float> da, ArrayView<float> db, int n, int ca, int cb, int spatial)
    {
        int len = Product(n, ca + cb, spatial, "concat dy");
        Expect(dy, len, $"concat dy [{n}, {ca + cb}, {spatial}]");
        bool wantA = da.Length != 0, wantB = db.Length != 0;
        if (wantA) Expect(da, Product(n, ca, spatial, "concat da"), $"concat da [{n}, {ca}, {spatial}]");
        if (wantB) Expect(db, Product(n, cb, spatial, "concat db"), $"concat db [{n}, {cb}, {spatial}]");
        if (!wantA && !wantB) return;
        Run(len, new ConcatBackwardKernel(dy, wantA ? da : dy, wantB ? db : dy, ca * spatial, cb * spatial, wantA ? 1 : 0, wantB ? 1 : 0));
    }

    // ---------------------------------------------------------------- Dropout
    // Element i is kept iff u_i = Philox.Uniform(seed, stream, offset + i) ≥ p; then y_i = x_i / (1 − p), else 0
    // (DropoutMask.Keep). Forward: src = x, dst = y (accumulate 0). Backward: src = dy, dst = dx (accumulate 1:
    // dx_i += keep_i · dy_i / (1 − p)), the mask regenerated from the same key.
    internal readonly struct DropoutOp(ArrayView<float> src, ArrayView<float> dst, DropoutMask mask, int accumulate) : IRandomElement
    {
        public RandomDraw Draw => RandomDraw.Uniform;

        public void Apply(int e, float u)
        {
            float v = mask.Keep(u, src[e]);
            if (accumulate != 0) dst[e] += v;
            else dst[e] = v;
        }
    }

    /// <summary>
    /// Inverted dropout: y_i = x_i / (1 − p) where Philox.Uniform(key.Seed, key.Stream, key.Offset + i) ≥ p,
    /// else 0. The mask is a pure function of (key, i): nothing is stored. The caller advances the key
    /// (by x's length) for the next draw.
    /// </summary>
    public void Dropout(ArrayView<float> x, ArrayView<float> y, float p, PhiloxKey key) => Dropout(x, y, p, key, "dropout x", "dropout y (same length as x)", 0);

    /// <summary>Dropout backward: dx_i += dy_i / (1 − p) where element i was kept (the same key regenerates the mask). ADDS into <paramref name="dx"/>.</summary>
    public void DropoutBackward(ArrayView<float> dy, ArrayView<float> dx, float p, PhiloxKey key) => Dropout(dy, dx, p, key, "dropout dy", "dropout dx (same length as dy)", 1);

    private void Dropout(ArrayView<float> src, ArrayView<float> dst, float p, PhiloxKey key, string srcName, string dstName, int accumulate)
    {
        int n = Length(src, srcName);
        Expect(dst, n, dstName);
        RandomKernels.ForEach(Device, new DropoutOp(src, dst, new DropoutMask(key, p), accumulate), key, n, Launch);
    }

    // ---------------------------------------------------------------- TimestepSinusoid
    // t [N] (int) -> out [N, dim], half = dim/2, f_j = exp(−ln(10000)·j/(half − 1)):
    //   out[n, j] = sin(t_n·f_j) for j < half,  out[n, half + j] = cos(t_n·f_j)   (DESIGN.md §4)
    // The phase t·f (float) is reduced to [−π, π] first (Cody–Waite, 2π = C1 + C2 with C1 exact in a few
    // bits), because GPU sin/cos approximations lose accuracy far from zero and t·f reaches ~10³.
    internal readonly struct TimestepSinusoidKernel(ArrayView<int> t, ArrayView<float> output, int dim) : IElementKernel
    {
        public void Element(int e)
        {
            int half = dim / 2;
            float logScale = -9.21034037198f / (half - 1); // −ln(10000) / (half − 1)
            int row = e / dim;
            int j = e - row * dim;
            int k = j < half ? j : j - half;
            float f = MathF.Exp(logScale * k);
            float phase = t[row] * f;
            float turns = MathF.Floor(phase * 0.159154943092f + 0.5f); // round(phase / 2π)
            float r = phase - turns * 6.28125f - turns * 1.93530717958e-3f;
            output[e] = j < half ? MathF.Sin(r) : MathF.Cos(r);
        }
    }

    /// <summary>
    /// The timestep embedding of DESIGN.md §4: output [n, dim] with row i = [sin(t_i·f_0..f_{half−1}),
    /// cos(t_i·f_0..f_{half−1})], half = dim/2, f_j = exp(−ln(10000)·j/(half − 1)), t_i (0-based step) as a float.
    /// Reads the first <paramref name="n"/> entries of <paramref name="t"/>. No gradient.
    /// </summary>
    public void TimestepSinusoid(ArrayView<int> t, ArrayView<float> output, int n, int dim)
    {
        if (n <= 0) throw new ArgumentException($"timestep sinusoid: batch size must be positive, got {n}");
        if (dim < 4 || dim % 2 != 0) throw new ArgumentException($"timestep sinusoid: dim must be even and at least 4, got {dim}");
        if (t.Length < n) throw new ArgumentException($"timestep sinusoid: expected at least {n} timesteps, got {t.Length}");
        int len = Product(n, dim, 1, "timestep sinusoid");
        Expect(output, len, $"timestep sinusoid output [{n}, {dim}]");
        Run(len, new TimestepSinusoidKernel(t, output, dim));
    }

    // ---------------------------------------------------------------- Fill
    // dst [L]:  dst = value
    internal readonly struct FillKernel(ArrayView<float> dst, float value) : IElementKernel
    {
        public void Element(int e) => dst[e] = value;
    }

    /// <summary>Every element of <paramref name="dst"/> = <paramref name="value"/>.</summary>
    public void Fill(ArrayView<float> dst, float value) => Run(Length(dst, "fill dst"), new FillKernel(dst, value));

    // ---------------------------------------------------------------- validation
    private static int Length<T>(ArrayView<T> view, string what) where T : unmanaged =>
        view.Length <= int.MaxValue ? (int)view.Length : throw new ArgumentException($"{what}: {view.Length} elements exceed 2^31 (32-bit indices)");

    private static void Expect<T>(ArrayView<T> view, long expected, string what) where T : unmanaged
    {
        if (view.Length != expected) throw new ArgumentException($"{what}: expected {expected} elements, got {view.Length}");
    }

    private static int Product(int a, int b, int c, string what)
    {
        if (a <= 0 || b <= 0 || c <= 0) throw new ArgumentException($"{what}: dimensions must be positive, got [{a}, {b}, {c}]");
        long p = (long)a * b * c;
        return p <= int.MaxValue ? (int)p : throw new ArgumentException($"{what}: [{a}, {b}, {c}] exceeds 2^31 elements (32-bit indices)");
    }
}
