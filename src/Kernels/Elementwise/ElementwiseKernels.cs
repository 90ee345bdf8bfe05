using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Kernels.Elementwise;

/// <summary>
/// Memory-bound elementwise kernels: SiLU, add, scale, per-channel bias, channel concat, Philox dropout,
/// timestep sinusoid, copy and fill — each forward next to its backward.
/// <para>
/// Parallelisation: every kernel is a grid-stride loop sized by <see cref="GridStride"/>: a launch starts
/// T threads and thread <c>i</c> handles units <c>i, i + T, i + 2T, …</c>, so neighbouring threads touch
/// neighbouring addresses (coalesced on a GPU). On a GPU T = ceil(units / 4): four units per thread. On
/// ILGPU's CPU accelerator, where every simulated thread is an OS thread and costs far more than the
/// arithmetic, T = ceil(units / 2048) capped at 2 per core.
/// </para>
/// <para>
/// Backward methods ADD into their gradient outputs (dx += …): the tape hands out zeroed gradient buffers,
/// so a tensor feeding two ops receives the sum. No atomics; every reduction is one thread per output
/// element in a fixed order, so results are bit-for-bit repeatable.
/// </para>
/// </summary>
public sealed class ElementwiseKernels : IKernelFamily<ElementwiseKernels>
{
    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int> silu;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> siluBackward;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> add;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int> addInto;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, float, int, int> scale;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, float, int, int> addScaledInto;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> addChannelVector;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int, int> channelSum;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> concat;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int, int, int, int> addChannelSlice;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int, ulong, uint, ulong, float, float> dropout;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int, ulong, uint, ulong, float, float> dropoutBackward;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<int>, ArrayView<float>, int, int, int> sinusoid;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int> copy;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, float, int, int> fill;

    private ElementwiseKernels(ComputeDevice device, GridStride launch)
    {
        this.device = device;
        Launch = launch;
        silu = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int>(SiluKernel);
        siluBackward = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(SiluBackwardKernel);
        add = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(AddKernel);
        addInto = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int>(AddIntoKernel);
        scale = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, float, int, int>(ScaleKernel);
        addScaledInto = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, float, int, int>(AddScaledIntoKernel);
        addChannelVector = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(AddChannelVectorKernel);
        channelSum = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int, int>(ChannelSumIntoKernel);
        concat = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(ConcatKernel);
        addChannelSlice = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int, int, int, int>(AddChannelSliceKernel);
        dropout = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int, ulong, uint, ulong, float, float>(DropoutKernel);
        dropoutBackward = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int, ulong, uint, ulong, float, float>(DropoutBackwardKernel);
        sinusoid = device.LoadStreamingKernel<ArrayView<int>, ArrayView<float>, int, int, int>(TimestepSinusoidKernel);
        copy = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int>(CopyKernel);
        fill = device.LoadStreamingKernel<ArrayView<float>, float, int, int>(FillKernel);
    }

    /// <inheritdoc/>
    public static ElementwiseKernels Create(ComputeDevice device) => new(device, GridStride.For(device));

    /// <summary>A family with a chosen launch shape (tests run the GPU's, and odd ones, on the CPU).</summary>
    internal static ElementwiseKernels CreateWith(ComputeDevice device, GridStride launch) => new(device, launch);

    /// <summary>How launches are sized on this family's device.</summary>
    internal GridStride Launch { get; }

    private int Threads(int units) => Launch.Threads(units);

    // Grid-stride step that cannot overflow: e + stride, or n when that would pass the end.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Next(int e, int stride, int n) => e < n - stride ? e + stride : n;

    // ---------------------------------------------------------------- SiLU
    // x [L] -> y [L]:  y = x·σ(x),  σ(x) = 1 / (1 + e^−x)
    internal static void SiluKernel(Index1D i, ArrayView<float> x, ArrayView<float> y, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
        {
            float v = x[e];
            y[e] = v / (1f + MathF.Exp(-v));
        }
    }

    // x, dy [L] -> dx [L] (ADDS):  dx += dy·σ(x)·(1 + x·(1 − σ(x)))
    internal static void SiluBackwardKernel(Index1D i, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
        {
            float v = x[e];
            float s = 1f / (1f + MathF.Exp(-v));
            dx[e] += dy[e] * s * (1f + v * (1f - s));
        }
    }

    /// <summary>y = x·σ(x) elementwise; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Silu(ArrayView<float> x, ArrayView<float> y)
    {
        int n = Length(x, "silu x");
        Expect(y, n, "silu y (same length as x)");
        if (n > 0) silu(device.Stream, Threads(n), x, y, n, Threads(n));
    }

    /// <summary>SiLU backward: dx += dy·σ(x)(1 + x(1 − σ(x))). ADDS into <paramref name="dx"/>.</summary>
    public void SiluBackward(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx)
    {
        int n = Length(x, "silu x");
        Expect(dy, n, "silu dy (same length as x)");
        Expect(dx, n, "silu dx (same length as x)");
        if (n > 0) siluBackward(device.Stream, Threads(n), x, dy, dx, n, Threads(n));
    }

    // ---------------------------------------------------------------- Add
    // a, b [L] -> y [L]:  y = a + b
    internal static void AddKernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            y[e] = a[e] + b[e];
    }

    // dst, src [L] (ADDS):  dst += src   — the backward of Add (da += dy, db += dy) and a general accumulate
    internal static void AddIntoKernel(Index1D i, ArrayView<float> dst, ArrayView<float> src, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            dst[e] += src[e];
    }

    /// <summary>y = a + b elementwise; <paramref name="y"/> may alias an input.</summary>
    public void Add(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y)
    {
        int n = Length(a, "add a");
        Expect(b, n, "add b (same length as a)");
        Expect(y, n, "add y (same length as a)");
        if (n > 0) add(device.Stream, Threads(n), a, b, y, n, Threads(n));
    }

    /// <summary>
    /// dst += src elementwise. This is Add's backward (call it with da and with db, each with dy) and the
    /// accumulate used wherever a gradient ADDS into a buffer.
    /// </summary>
    public void AddInto(ArrayView<float> dst, ArrayView<float> src)
    {
        int n = Length(dst, "add-into dst");
        Expect(src, n, "add-into src (same length as dst)");
        if (n > 0) addInto(device.Stream, Threads(n), dst, src, n, Threads(n));
    }

    // ---------------------------------------------------------------- Scale
    // x [L] -> y [L]:  y = s·x
    internal static void ScaleKernel(Index1D i, ArrayView<float> x, ArrayView<float> y, float s, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            y[e] = s * x[e];
    }

    // dst, src [L] (ADDS):  dst += s·src   — Scale's backward (dx += s·dy)
    internal static void AddScaledIntoKernel(Index1D i, ArrayView<float> dst, ArrayView<float> src, float s, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            dst[e] += s * src[e];
    }

    /// <summary>y = s·x elementwise; <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public void Scale(ArrayView<float> x, ArrayView<float> y, float s)
    {
        int n = Length(x, "scale x");
        Expect(y, n, "scale y (same length as x)");
        if (n > 0) scale(device.Stream, Threads(n), x, y, s, n, Threads(n));
    }

    /// <summary>Scale backward: dx += s·dy. ADDS into <paramref name="dx"/>.</summary>
    public void ScaleBackward(ArrayView<float> dy, ArrayView<float> dx, float s) => AddScaledInto(dx, dy, s);

    /// <summary>dst += s·src elementwise.</summary>
    public void AddScaledInto(ArrayView<float> dst, ArrayView<float> src, float s)
    {
        int n = Length(dst, "add-scaled dst");
        Expect(src, n, "add-scaled src (same length as dst)");
        if (n > 0) addScaledInto(device.Stream, Threads(n), dst, src, s, n, Threads(n));
    }

    // ---------------------------------------------------------------- AddChannelVector
    // x [N,C,S] (S = H·W), v [N,C] -> y [N,C,S]:  y[n,c,s] = x[n,c,s] + v[n,c]
    internal static void AddChannelVectorKernel(Index1D i, ArrayView<float> x, ArrayView<float> v, ArrayView<float> y, int spatial, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            y[e] = x[e] + v[e / spatial];
    }

    // dy [N·C rows, S] -> dv [N·C] (ADDS):  dv[r] += Σ_s dy[r,s], one thread per row, summed in a fixed
    // order (four interleaved partial sums, then a tail, combined as (s0 + s1) + (s2 + s3)).
    internal static void ChannelSumIntoKernel(Index1D i, ArrayView<float> dy, ArrayView<float> dv, int spatial, int rows, int stride)
    {
        for (int r = i.X; r < rows; r = Next(r, stride, rows))
        {
            int start = r * spatial;
            int end = start + spatial;
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int k = start;
            for (; k + 3 < end; k += 4)
            {
                s0 += dy[k];
                s1 += dy[k + 1];
                s2 += dy[k + 2];
                s3 += dy[k + 3];
            }
            for (; k < end; k++) s0 += dy[k];
            dv[r] += (s0 + s1) + (s2 + s3);
        }
    }

    /// <summary>y[n,c,s] = x[n,c,s] + v[n,c] for x [N,C,S] (S = H·W), v [N,C].</summary>
    public void AddChannelVector(ArrayView<float> x, ArrayView<float> v, ArrayView<float> y, int n, int c, int spatial)
    {
        int len = Product(n, c, spatial, "add-channel-vector");
        Expect(x, len, $"add-channel-vector x [{n}, {c}, {spatial}]");
        Expect(v, (long)n * c, $"add-channel-vector v [{n}, {c}]");
        Expect(y, len, $"add-channel-vector y [{n}, {c}, {spatial}]");
        addChannelVector(device.Stream, Threads(len), x, v, y, spatial, len, Threads(len));
    }

    /// <summary>
    /// AddChannelVector backward, ADDING into the gradients: dx += dy; dv[n,c] += Σ_s dy[n,c,s]
    /// (one thread per (n,c), fixed order). Pass <c>default</c> for a gradient that is not wanted.
    /// </summary>
    public void AddChannelVectorBackward(ArrayView<float> dy, ArrayView<float> dx, ArrayView<float> dv, int n, int c, int spatial)
    {
        int len = Product(n, c, spatial, "add-channel-vector backward");
        Expect(dy, len, $"add-channel-vector dy [{n}, {c}, {spatial}]");
        if (dx.Length > 0)
        {
            Expect(dx, len, $"add-channel-vector dx [{n}, {c}, {spatial}]");
            addInto(device.Stream, Threads(len), dx, dy, len, Threads(len));
        }
        if (dv.Length > 0)
        {
            int rows = n * c;
            Expect(dv, rows, $"add-channel-vector dv [{n}, {c}]");
            // A row is already `spatial` elements of work: one row per thread (on a GPU) unless rows are
            // shorter than MinItemsPerThread, then MinItemsPerThread / spatial rows per thread.
            var rowLaunch = Launch with { MinItemsPerThread = Math.Max(1, Launch.MinItemsPerThread / spatial) };
            int threads = rowLaunch.Threads(rows);
            channelSum(device.Stream, threads, dy, dv, spatial, rows, threads);
        }
    }

    // ---------------------------------------------------------------- Concat (channels)
    // a [N,Ca,S], b [N,Cb,S] -> y [N,Ca+Cb,S]:  y[n, c<Ca] = a[n,c];  y[n, Ca+c] = b[n,c]
    // With rowA = Ca·S, rowB = Cb·S: output element e lies in batch n = e / (rowA + rowB) at r = e − n·(rowA + rowB).
    internal static void ConcatKernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int rowA, int rowB, int n, int stride)
    {
        int row = rowA + rowB;
        for (int e = i.X; e < n; e = Next(e, stride, n))
        {
            int batch = e / row;
            int r = e - batch * row;
            y[e] = r < rowA ? a[batch * rowA + r] : b[batch * rowB + (r - rowA)];
        }
    }

    // Concat's backward, one part at a time: dy [N,Ct,S] -> dpart [N,Cp,S] (ADDS):
    // dpart[n,c,s] += dy[n, c0 + c, s], with rowPart = Cp·S, rowAll = Ct·S, start = c0·S.
    internal static void AddChannelSliceKernel(Index1D i, ArrayView<float> dy, ArrayView<float> dpart, int rowPart, int rowAll, int start, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
        {
            int batch = e / rowPart;
            int r = e - batch * rowPart;
            dpart[e] += dy[batch * rowAll + start + r];
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
        concat(device.Stream, Threads(len), a, b, y, ca * spatial, cb * spatial, len, Threads(len));
    }

    /// <summary>
    /// Concat backward (the split), ADDING into the gradients: da += dy[:, :Ca], db += dy[:, Ca:].
    /// Pass <c>default</c> for a gradient that is not wanted.
    /// </summary>
    public void ConcatBackward(ArrayView<float> dy, ArrayView<float> da, ArrayView<float> db, int n, int ca, int cb, int spatial)
    {
        int len = Product(n, ca + cb, spatial, "concat dy");
        Expect(dy, len, $"concat dy [{n}, {ca + cb}, {spatial}]");
        if (da.Length > 0)
        {
            int lenA = Product(n, ca, spatial, "concat da");
            Expect(da, lenA, $"concat da [{n}, {ca}, {spatial}]");
            addChannelSlice(device.Stream, Threads(lenA), dy, da, ca * spatial, (ca + cb) * spatial, 0, lenA, Threads(lenA));
        }
        if (db.Length > 0)
        {
            int lenB = Product(n, cb, spatial, "concat db");
            Expect(db, lenB, $"concat db [{n}, {cb}, {spatial}]");
            addChannelSlice(device.Stream, Threads(lenB), dy, db, cb * spatial, (ca + cb) * spatial, ca * spatial, lenB, Threads(lenB));
        }
    }

    // ---------------------------------------------------------------- Dropout
    // Element i is kept iff u_i = Philox.Uniform(seed, stream, offset + i) ≥ p; then y_i = x_i / (1 − p), else 0.
    // Unit u = one Philox block (four numbers): block (offset >> 2) + u holds numbers 4·((offset >> 2) + u) + lane,
    // i.e. elements i = 4u − (offset & 3) + lane. One block evaluation serves four elements.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DropLane(ArrayView<float> src, ArrayView<float> dst, int e, int n, uint bits, float p, float scale, bool accumulate)
    {
        if (e < 0 || e >= n) return;
        float v = Philox.ToUniform(bits) >= p ? src[e] * scale : 0f;
        if (accumulate) dst[e] += v;
        else dst[e] = v;
    }

    // x [L] -> y [L]:  y_i = keep_i · x_i / (1 − p)
    internal static void DropoutKernel(Index1D i, ArrayView<float> x, ArrayView<float> y, int n, int stride, ulong seed, uint stream, ulong offset, float p, float scale)
    {
        int blocks = BlockCount(offset, n);
        int shift = (int)(offset & 3UL);
        ulong first = offset >> 2;
        for (int u = i.X; u < blocks; u = Next(u, stride, blocks))
        {
            Philox.Block(seed, stream, first + (ulong)u, out uint w0, out uint w1, out uint w2, out uint w3);
            int e = 4 * u - shift;
            DropLane(x, y, e, n, w0, p, scale, false);
            DropLane(x, y, e + 1, n, w1, p, scale, false);
            DropLane(x, y, e + 2, n, w2, p, scale, false);
            DropLane(x, y, e + 3, n, w3, p, scale, false);
        }
    }

    // dy [L] -> dx [L] (ADDS):  dx_i += keep_i · dy_i / (1 − p), the mask regenerated from the same key
    internal static void DropoutBackwardKernel(Index1D i, ArrayView<float> dy, ArrayView<float> dx, int n, int stride, ulong seed, uint stream, ulong offset, float p, float scale)
    {
        int blocks = BlockCount(offset, n);
        int shift = (int)(offset & 3UL);
        ulong first = offset >> 2;
        for (int u = i.X; u < blocks; u = Next(u, stride, blocks))
        {
            Philox.Block(seed, stream, first + (ulong)u, out uint w0, out uint w1, out uint w2, out uint w3);
            int e = 4 * u - shift;
            DropLane(dy, dx, e, n, w0, p, scale, true);
            DropLane(dy, dx, e + 1, n, w1, p, scale, true);
            DropLane(dy, dx, e + 2, n, w2, p, scale, true);
            DropLane(dy, dx, e + 3, n, w3, p, scale, true);
        }
    }

    // Philox blocks covering numbers offset .. offset + n − 1.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BlockCount(ulong offset, int n) => (int)(((offset + (ulong)n - 1UL) >> 2) - (offset >> 2)) + 1;

    /// <summary>
    /// Inverted dropout: y_i = x_i / (1 − p) where Philox.Uniform(key.Seed, key.Stream, key.Offset + i) ≥ p,
    /// else 0. The mask is a pure function of (key, i): nothing is stored. The caller advances the key
    /// (by x's length) for the next draw.
    /// </summary>
    public void Dropout(ArrayView<float> x, ArrayView<float> y, float p, PhiloxKey key)
    {
        int n = Length(x, "dropout x");
        Expect(y, n, "dropout y (same length as x)");
        float scale = KeptScale(p);
        if (n == 0) return;
        int threads = Threads(BlockCount(key.Offset, n));
        dropout(device.Stream, threads, x, y, n, threads, key.Seed, key.Stream, key.Offset, p, scale);
    }

    /// <summary>Dropout backward: dx_i += dy_i / (1 − p) where element i was kept (the same key regenerates the mask). ADDS into <paramref name="dx"/>.</summary>
    public void DropoutBackward(ArrayView<float> dy, ArrayView<float> dx, float p, PhiloxKey key)
    {
        int n = Length(dy, "dropout dy");
        Expect(dx, n, "dropout dx (same length as dy)");
        float scale = KeptScale(p);
        if (n == 0) return;
        int threads = Threads(BlockCount(key.Offset, n));
        dropoutBackward(device.Stream, threads, dy, dx, n, threads, key.Seed, key.Stream, key.Offset, p, scale);
    }

    private static float KeptScale(float p) =>
        p >= 0f && p < 1f ? 1f / (1f - p) : throw new ArgumentOutOfRangeException(nameof(p), $"dropout probability must be in [0, 1), got {p}");

    // ---------------------------------------------------------------- TimestepSinusoid
    // t [N] (int) -> out [N, dim], half = dim/2, f_j = exp(−ln(10000)·j/(half − 1)):
    //   out[n, j] = sin(t_n·f_j) for j < half,  out[n, half + j] = cos(t_n·f_j)   (DESIGN.md §4)
    // The phase t·f (float) is reduced to [−π, π] first (Cody–Waite, 2π = C1 + C2 with C1 exact in a few
    // bits), because GPU sin/cos approximations lose accuracy far from zero and t·f reaches ~10³.
    internal static void TimestepSinusoidKernel(Index1D i, ArrayView<int> t, ArrayView<float> output, int dim, int n, int stride)
    {
        int half = dim / 2;
        float logScale = -9.21034037198f / (half - 1); // −ln(10000) / (half − 1)
        for (int e = i.X; e < n; e = Next(e, stride, n))
        {
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
        sinusoid(device.Stream, Threads(len), t, output, dim, len, Threads(len));
    }

    // ---------------------------------------------------------------- Copy, Fill
    // src [L] -> dst [L]:  dst = src
    internal static void CopyKernel(Index1D i, ArrayView<float> src, ArrayView<float> dst, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            dst[e] = src[e];
    }

    // dst [L]:  dst = value
    internal static void FillKernel(Index1D i, ArrayView<float> dst, float value, int n, int stride)
    {
        for (int e = i.X; e < n; e = Next(e, stride, n))
            dst[e] = value;
    }

    /// <summary>dst = src (same length), ordered on the device stream.</summary>
    public void Copy(ArrayView<float> src, ArrayView<float> dst)
    {
        int n = Length(src, "copy src");
        Expect(dst, n, "copy dst (same length as src)");
        if (n > 0) copy(device.Stream, Threads(n), src, dst, n, Threads(n));
    }

    /// <summary>Every element of <paramref name="dst"/> = <paramref name="value"/>.</summary>
    public void Fill(ArrayView<float> dst, float value)
    {
        int n = Length(dst, "fill dst");
        if (n > 0) fill(device.Stream, Threads(n), dst, value, n, Threads(n));
    }

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

/// <summary>
/// How a grid-stride launch is sized: T = ceil(units / <see cref="MinItemsPerThread"/>) threads, at most
/// <see cref="MaxThreads"/>; thread i handles units i, i + T, i + 2T, …
/// </summary>
internal readonly record struct GridStride(int MinItemsPerThread, int MaxThreads)
{
    /// <summary>Units per thread on a GPU: a few, so loads stay coalesced and occupancy high.</summary>
    public const int GpuItemsPerThread = 4;

    /// <summary>Smallest share of a thread on ILGPU's CPU accelerator, where a thread costs microseconds.</summary>
    public const int CpuMinItemsPerThread = 2048;

    /// <summary>Threads per core on ILGPU's CPU accelerator: enough to keep every core busy, few enough to stay cheap.</summary>
    public const int CpuThreadsPerCore = 2;

    /// <summary>The launch shape for <paramref name="device"/>.</summary>
    public static GridStride For(ComputeDevice device) => device.IsCpu
        ? new(CpuMinItemsPerThread, CpuThreadsPerCore * Math.Max(1, Environment.ProcessorCount))
        : new(GpuItemsPerThread, int.MaxValue);

    /// <summary>Threads for <paramref name="units"/> units of work (at least 1).</summary>
    public int Threads(int units)
    {
        if (MinItemsPerThread < 1 || MaxThreads < 1) throw new InvalidOperationException($"bad launch shape {this}");
        long t = ((long)units + MinItemsPerThread - 1) / MinItemsPerThread;
        return (int)Math.Clamp(t, 1, MaxThreads);
    }
}
