using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Matmul;

/// <summary>Which GEMM implementation <see cref="MatmulKernels"/> launches.</summary>
public enum GemmVariant
{
    /// <summary><see cref="RegisterBlocked"/> on the CPU accelerator, <see cref="Tiled"/> elsewhere.</summary>
    Auto,

    /// <summary>Explicitly grouped: 8×8 threads share 64×64 tiles of A and B in shared memory (barriers), 8×8 outputs each; GPUs.</summary>
    Tiled,

    /// <summary>Barrier-free: each thread computes a 16×16 block of C straight from global memory; the CPU accelerator.</summary>
    RegisterBlocked,
}

/// <summary>
/// The shape of a batched GEMM <c>C[b] (+)= alpha·op(A[b])·op(B[b])</c>: op(A) is M×K, op(B) is K×N, C is M×N.
/// Every matrix is row-major and contiguous and the batches follow one another: A is [Batch, M, K]
/// ([Batch, K, M] when <see cref="TransposeA"/>), B is [Batch, K, N] ([Batch, N, K] when
/// <see cref="TransposeB"/>), C is [Batch, M, N].
/// </summary>
public readonly record struct GemmDims(int Batch, int M, int N, int K, bool TransposeA = false, bool TransposeB = false)
{
    /// <summary>Multiply-adds times two: the FLOPs of one call (bias and accumulation not counted).</summary>
    public long Flops => 2L * Batch * M * N * K;

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Batch}×[{M}×{K}{(TransposeA ? "ᵀ" : "")}]·[{K}×{N}{(TransposeB ? "ᵀ" : "")}]";
}

/// <summary>
/// Batched matrix multiplication, the core of <c>Linear</c>, attention and their backward passes:
/// <c>C[b] = alpha·op(A[b])·op(B[b]) (+ bias[j]) (+ C[b] when accumulating)</c>, op = identity or transpose.
/// Two implementations of the same sum, each output element summed by one thread over k in ascending
/// order (deterministic, no atomics): a shared-memory tiled kernel for GPUs and a barrier-free
/// register-blocked kernel for ILGPU's CPU accelerator (see <see cref="GemmVariant"/>).
/// The bias gradient (column sums) is here too.
/// </summary>
public sealed class MatmulKernels(ComputeDevice device) : IKernelFamily<MatmulKernels>
{
    /// <summary>
    /// Self-check probes: plain and transposed operands (the backward passes), batched (attention), accumulating
    /// (gradients), and a Linear with its bias gradient. Tolerance: sums over K in another order.
    /// </summary>
    public static KernelProbes Probes { get; } = new("Matmul", 1e-4,
    [
        .. new[]
        {
            (new GemmDims(1, 70, 50, 90), false), (new GemmDims(1, 64, 128, 64, TransposeA: true), false),
            (new GemmDims(1, 33, 65, 129, TransposeB: true), true), (new GemmDims(3, 49, 49, 32, TransposeA: true, TransposeB: true), true),
            (new GemmDims(2, 196, 196, 32, TransposeA: true), false),
        }.Select(c => new KernelProbe($"Gemm {c.Item1}{(c.Item2 ? " accumulate" : "")}", k =>
        {
            var d = c.Item1;
            k.Kernels<MatmulKernels>().Gemm(k.In(d.Batch * d.M * d.K).View, k.In(d.Batch * d.K * d.N).View, k.Acc(d.Batch * d.M * d.N).View,
                d, alpha: 0.75f, accumulate: c.Item2);
        })),
        new KernelProbe("GemmBias (Linear 37×64 → 256) and BiasBackward", k =>
        {
            var matmul = k.Kernels<MatmulKernels>();
            var y = k.Out(37 * 256);
            matmul.GemmBias(k.In(37 * 64).View, k.In(256 * 64, -0.2f, 0.2f).View, k.In(256).View, y.View, new GemmDims(1, 37, 256, 64, TransposeB: true));
            matmul.BiasBackward(y.View, k.Acc(256).View, 37, 256);
        }),
    ]);

    /// <inheritdoc/>
    public static MatmulKernels Create(ComputeDevice device) => new(device);

    /// <summary>The variant <see cref="GemmVariant.Auto"/> resolves to on this device.</summary>
    public GemmVariant DefaultVariant => device.UsesGpuVariants ? GemmVariant.Tiled : GemmVariant.RegisterBlocked;

    // ---------------------------------------------------------------------------------------------
    // Forward: C[b] = alpha·op(A[b])·op(B[b]) (+ bias) (+ C[b])
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// <c>c[b] = alpha·op(a[b])·op(b[b])</c>, or <c>c[b] += …</c> when <paramref name="accumulate"/>
    /// (backward passes add into gradients). Shapes as in <see cref="GemmDims"/>.
    /// </summary>
    public void Gemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmDims dims,
                     float alpha = 1f, bool accumulate = false, GemmVariant variant = GemmVariant.Auto) =>
        Launch(a, b, c, c, hasBias: false, dims, alpha, accumulate, variant);

    /// <summary>
    /// <c>c[b][i,j] = alpha·(op(a[b])·op(b[b]))[i,j] + bias[j]</c> (plus the old <c>c</c> when
    /// <paramref name="accumulate"/>): a GEMM with a bias broadcast over rows, as <c>Linear</c> needs.
    /// bias [N].
    /// </summary>
    public void GemmBias(ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, ArrayView<float> c, GemmDims dims,
                         float alpha = 1f, bool accumulate = false, GemmVariant variant = GemmVariant.Auto)
    {
        if (bias.Length != dims.N)
            throw new ArgumentException($"gemm bias: expected {dims.N} elements (N), got {bias.Length}");
        Launch(a, b, c, bias, hasBias: true, dims, alpha, accumulate, variant);
    }

    private void Launch(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, bool hasBias,
                        GemmDims d, float alpha, bool accumulate, GemmVariant variant)
    {
        if (d.Batch <= 0 || d.M <= 0 || d.N <= 0 || d.K <= 0)
            throw new ArgumentException($"gemm: every dimension must be positive, got batch {d.Batch}, M {d.M}, N {d.N}, K {d.K}");
        CheckLength(a, (long)d.Batch * d.M * d.K, "A", d.TransposeA ? "[batch, K, M]" : "[batch, M, K]", d);
        CheckLength(b, (long)d.Batch * d.K * d.N, "B", d.TransposeB ? "[batch, N, K]" : "[batch, K, N]", d);
        CheckLength(c, (long)d.Batch * d.M * d.N, "C", "[batch, M, N]", d);
        if (variant == GemmVariant.Auto) variant = DefaultVariant;
        var epilogue = new MatrixStore { C = c, Bias = bias, M = d.M, N = d.N, Alpha = alpha, Accumulate = accumulate ? 1 : 0, HasBias = hasBias ? 1 : 0 };
        GemmCore.Run(device,
            Strided.A(a, d.M, d.K, d.TransposeA, d.M * d.K), Strided.B(b, d.K, d.N, d.TransposeB, d.K * d.N), epilogue,
            d.Batch, d.M, d.N, d.K, variant == GemmVariant.Tiled);
    }

    /// <summary>The GEMM-core kernel structs matmul launches (compiled to PTX by the tests).</summary>
    internal static IEnumerable<Type> LaunchedKernels => GemmCore.Kernels<Strided, Strided, MatrixStore>().Concat(GemmCore.Kernels<Strided, OnesColumn<Strided>, WeightBiasStore>())
        .Append(GemmCore.PairKernel<Strided, Strided, MatrixStore, Strided, OnesColumn<Strided>, WeightBiasStore>());

    private static void CheckLength(ArrayView<float> view, long expected, string name, string layout, GemmDims d)
    {
        if (view.Length != expected)
            throw new ArgumentException($"gemm {d}: {name} must be {layout} = {expected} elements, got {view.Length}");
    }

    /// <summary>
    /// The parameter gradients of <c>y = x·Wᵀ + b</c>: dw [Out, In] += dyᵀ·x over the <paramref name="rows"/> rows of
    /// dy [rows, Out] and x [rows, In], and db [Out] += Σ_r dy when <paramref name="db"/> is not empty. With the tiled
    /// kernel (a GPU's) one GEMM, [dw | db] += dyᵀ·[x | 1]; otherwise the GEMM and <see cref="BiasBackward"/>, whose bits
    /// the CPU accelerator keeps.
    /// </summary>
    public void LinearParameterBackward(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> dw, ArrayView<float> db, int rows, int outFeatures, int inFeatures,
                                        GemmVariant variant = GemmVariant.Auto)
    {
        var dims = new GemmDims(1, outFeatures, inFeatures, rows, TransposeA: true);
        if (variant == GemmVariant.Auto) variant = DefaultVariant;
        if (db.Length == 0 || variant != GemmVariant.Tiled)
        {
            Gemm(dy, x, dw, dims, accumulate: true, variant: variant);
            if (db.Length != 0) BiasBackward(dy, db, rows, outFeatures);
            return;
        }
        var (a, b, into) = ParameterProduct(dy, x, dw, db, rows, outFeatures, inFeatures);
        GemmCore.Run(device, a, b, into, 1, outFeatures, into.Columns, rows, tiled: true);
    }

    /// <summary>
    /// Every wanted gradient of <c>y = x·Wᵀ + b</c> (an empty view for one that is not): dx [rows, In] += dy·W, and dw, db as
    /// <see cref="LinearParameterBackward"/>. With the tiled kernel (a GPU's) dx's product and the parameters' run as one
    /// launch (<see cref="GemmCore.RunPair"/>, issue 9); otherwise one call after the other, the CPU accelerator's bits.
    /// </summary>
    public void LinearBackward(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> w, ArrayView<float> dx, ArrayView<float> dw, ArrayView<float> db,
                               int rows, int outFeatures, int inFeatures, GemmVariant variant = GemmVariant.Auto)
    {
        if (variant == GemmVariant.Auto) variant = DefaultVariant;
        var input = new GemmDims(1, rows, inFeatures, outFeatures);
        if (variant != GemmVariant.Tiled || dx.Length == 0 || dw.Length == 0)
        {
            if (dx.Length != 0) Gemm(dy, w, dx, input, accumulate: true, variant: variant);
            if (dw.Length != 0) LinearParameterBackward(dy, x, dw, db, rows, outFeatures, inFeatures, variant);
            else if (db.Length != 0) BiasBackward(dy, db, rows, outFeatures);
            return;
        }
        CheckLength(w, (long)outFeatures * inFeatures, "w", "[Out, In]", input);
        CheckLength(dx, (long)rows * inFeatures, "dx", "[rows, In]", input);
        var (a, b, into) = ParameterProduct(dy, x, dw, db, rows, outFeatures, inFeatures);
        GemmCore.RunPair(device, Strided.A(dy, rows, outFeatures, false, 0), Strided.B(w, outFeatures, inFeatures, false, 0),
            new MatrixStore { C = dx, Bias = dx, M = rows, N = inFeatures, Alpha = 1f, Accumulate = 1 }, 1, rows, inFeatures, outFeatures,
            a, b, into, 1, outFeatures, into.Columns, rows);
    }

    // [dw | db] += dyᵀ·[x | 1] (without db: dw += dyᵀ·x, the column of ones never read), checked.
    private static (Strided A, OnesColumn<Strided> B, WeightBiasStore Into) ParameterProduct(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> dw, ArrayView<float> db,
                                                                                           int rows, int outFeatures, int inFeatures)
    {
        var dims = new GemmDims(1, outFeatures, inFeatures, rows, TransposeA: true);
        CheckLength(dy, (long)rows * outFeatures, "dy", "[rows, Out]", dims);
        CheckLength(x, (long)rows * inFeatures, "x", "[rows, In]", dims);
        CheckLength(dw, (long)outFeatures * inFeatures, "dw", "[Out, In]", dims);
        if (db.Length != 0) CheckLength(db, outFeatures, "db", "[Out]", dims);
        var ones = new OnesColumn<Strided> { Inner = Strided.B(x, rows, inFeatures, false, 0), Columns = inFeatures };
        var into = new WeightBiasStore { Dw = dw, Db = db.Length != 0 ? db : dw, Weights = inFeatures, Columns = inFeatures + (db.Length != 0 ? 1 : 0) };
        return (Strided.A(dy, outFeatures, rows, true, 0), ones, into);
    }

    // ---------------------------------------------------------------------------------------------
    // Bias gradient: db[j] += Σ_r dy[r, j]
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Bias gradient of <c>y = x·Wᵀ + b</c>: <c>db[j] += Σ_r dy[r, j]</c> over the <paramref name="rows"/>
    /// rows of dy [rows, cols]. ADDS into <paramref name="db"/> [cols]. The deterministic column sums of <see cref="ReduceKernels"/>.
    /// </summary>
    public void BiasBackward(ArrayView<float> dy, ArrayView<float> db, int rows, int cols)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentException($"bias backward: rows and cols must be positive, got {rows}×{cols}");
        if (dy.Length != (long)rows * cols) throw new ArgumentException($"bias backward: dy must be [{rows}, {cols}] = {(long)rows * cols} elements, got {dy.Length}");
        if (db.Length != cols) throw new ArgumentException($"bias backward: db must have {cols} elements, got {db.Length}");
        device.Kernels<ReduceKernels>().Rows(new ColumnTerm(dy, rows, cols), new AddSink(db), cols, rows);
    }
}
