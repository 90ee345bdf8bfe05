using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Matmul;

/// <summary>Which GEMM implementation <see cref="MatmulKernels"/> launches.</summary>
public enum GemmVariant
{
    /// <summary><see cref="RegisterBlocked"/> on the CPU accelerator, <see cref="Tiled"/> elsewhere.</summary>
    Auto,

    /// <summary>Explicitly grouped: 16×16 threads share 64×64 tiles of A and B in shared memory (barriers); GPUs.</summary>
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
/// Kernel-side GEMM arguments (ints for flags: kernel parameters must be blittable). Public only because
/// ILGPU's CPU runtime must see kernel parameter types; the launch methods of <see cref="MatmulKernels"/> build it.
/// </summary>
public readonly struct GemmArgs
{
    public readonly int M, N, K;
    public readonly int TransposeA, TransposeB;
    public readonly float Alpha;
    public readonly int Accumulate, HasBias;
    /// <summary>Blocks (or tiles) of C per row of blocks.</summary>
    public readonly int BlocksN;

    internal GemmArgs(int m, int n, int k, bool transposeA, bool transposeB, float alpha, bool accumulate, bool hasBias, int blocksN)
    {
        M = m; N = n; K = k;
        TransposeA = transposeA ? 1 : 0;
        TransposeB = transposeB ? 1 : 0;
        Alpha = alpha;
        Accumulate = accumulate ? 1 : 0;
        HasBias = hasBias ? 1 : 0;
        BlocksN = blocksN;
    }
}

/// <summary>
/// Batched matrix multiplication, the core of <c>Linear</c>, attention and their backward passes:
/// <c>C[b] = alpha·op(A[b])·op(B[b]) (+ bias[j]) (+ C[b] when accumulating)</c>, op = identity or transpose.
/// Two implementations of the same sum, each output element summed by one thread over k in ascending
/// order (deterministic, no atomics): a shared-memory tiled kernel for GPUs and a barrier-free
/// register-blocked kernel for ILGPU's CPU accelerator (see <see cref="GemmVariant"/>).
/// The bias gradient (column sums) is here too.
/// </summary>
public sealed class MatmulKernels : IKernelFamily<MatmulKernels>
{
    /// <summary>Rows of C one thread computes in the register-blocked variant.</summary>
    internal const int BlockM = 16;

    /// <summary>Columns of C one thread computes in the register-blocked variant.</summary>
    internal const int BlockN = 16;

    /// <summary>Rows and columns of the C tile one 16×16 group computes in the tiled variant (4×4 per thread).</summary>
    internal const int Tile = 64;

    /// <summary>Depth of the A and B tiles staged in shared memory per step.</summary>
    internal const int TileK = 16;

    /// <summary>Threads per group side in the tiled variant (16×16 = 256 threads).</summary>
    internal const int GroupSide = 16;

    /// <summary>Shared-memory row stride of a tile: 64 + 1 padding so transposing stores avoid bank conflicts.</summary>
    private const int TileStride = Tile + 1;

    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs> blocked;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs> tiled;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int> biasBackward;

    private MatmulKernels(ComputeDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        blocked = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(GemmBlockedKernel);
        tiled = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmArgs>(GemmTiledKernel);
        biasBackward = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int>(BiasBackwardKernel);
    }

    /// <inheritdoc/>
    public static MatmulKernels Create(ComputeDevice device) => new(device);

    /// <summary>The variant <see cref="GemmVariant.Auto"/> resolves to on this device.</summary>
    public GemmVariant DefaultVariant => device.IsCpu ? GemmVariant.RegisterBlocked : GemmVariant.Tiled;

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
        if (variant == GemmVariant.RegisterBlocked)
        {
            int blocksM = (d.M + BlockM - 1) / BlockM, blocksN = (d.N + BlockN - 1) / BlockN;
            long threads = (long)d.Batch * blocksM * blocksN;
            if (threads > int.MaxValue) throw new ArgumentException($"gemm {d}: too many register blocks for a 32-bit launch");
            var args = new GemmArgs(d.M, d.N, d.K, d.TransposeA, d.TransposeB, alpha, accumulate, hasBias, blocksN);
            blocked(device.Stream, (int)threads, a, b, c, bias, args);
        }
        else
        {
            int tilesM = (d.M + Tile - 1) / Tile, tilesN = (d.N + Tile - 1) / Tile;
            var args = new GemmArgs(d.M, d.N, d.K, d.TransposeA, d.TransposeB, alpha, accumulate, hasBias, tilesN);
            var config = new KernelConfig(new Index3D(tilesN, tilesM, d.Batch), new Index3D(GroupSide, GroupSide, 1));
            tiled(device.Stream, config, a, b, c, bias, args);
        }
    }

    private static void CheckLength(ArrayView<float> view, long expected, string name, string layout, GemmDims d)
    {
        if (view.Length != expected)
            throw new ArgumentException($"gemm {d}: {name} must be {layout} = {expected} elements, got {view.Length}");
    }

    /// <summary>Writes one element of C: alpha·sum (+ bias[j]) (+ old C); skips elements outside the matrix.</summary>
    private static void StoreOutput(ArrayView<float> c, ArrayView<float> bias, GemmArgs p, int cBase, int i, int j, float sum)
    {
        if (i >= p.M || j >= p.N) return;
        int index = cBase + i * p.N + j;
        float v = p.Alpha * sum;
        if (p.HasBias != 0) v += bias[j];
        if (p.Accumulate != 0) v += c[index];
        c[index] = v;
    }

    /// <summary>Writes row <paramref name="i"/>, columns j0..j0+15 of a 16×16 register block (those inside C).</summary>
    private static void StoreRow(ArrayView<float> c, ArrayView<float> bias, GemmArgs p, int cBase, int i, int j0,
                                 float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7,
                                 float v8, float v9, float v10, float v11, float v12, float v13, float v14, float v15)
    {
        if (i >= p.M) return;
        StoreOutput(c, bias, p, cBase, i, j0, v0); StoreOutput(c, bias, p, cBase, i, j0 + 1, v1);
        StoreOutput(c, bias, p, cBase, i, j0 + 2, v2); StoreOutput(c, bias, p, cBase, i, j0 + 3, v3);
        StoreOutput(c, bias, p, cBase, i, j0 + 4, v4); StoreOutput(c, bias, p, cBase, i, j0 + 5, v5);
        StoreOutput(c, bias, p, cBase, i, j0 + 6, v6); StoreOutput(c, bias, p, cBase, i, j0 + 7, v7);
        StoreOutput(c, bias, p, cBase, i, j0 + 8, v8); StoreOutput(c, bias, p, cBase, i, j0 + 9, v9);
        StoreOutput(c, bias, p, cBase, i, j0 + 10, v10); StoreOutput(c, bias, p, cBase, i, j0 + 11, v11);
        StoreOutput(c, bias, p, cBase, i, j0 + 12, v12); StoreOutput(c, bias, p, cBase, i, j0 + 13, v13);
        StoreOutput(c, bias, p, cBase, i, j0 + 14, v14); StoreOutput(c, bias, p, cBase, i, j0 + 15, v15);
    }

    // Register-blocked (barrier-free) GEMM: one thread per 16×16 block of C.
    // a [B,M,K] or [B,K,M], b [B,K,N] or [B,N,K], bias [N] (unused unless HasBias), c [B,M,N]
    // c[b,i,j] (+)= alpha·Σ_k opA[b,i,k]·opB[b,k,j] (+ bias[j]); k ascending.
    // Per k the thread loads 16 values of op(A) and 16 of op(B) and does 256 multiply-adds. On ILGPU's CPU
    // accelerator every ArrayView access pays range and buffer checks, so the cost is loads per multiply-add
    // ((16+16)/256 here); a 4×4 block measured ~5× slower at 256³. The k loop is not unrolled further: its
    // body is already 256 multiply-adds (unrolling by 2 measured no gain). Rows/columns past the edge are
    // clamped for loading (no branches in the k loop) and not stored.
    internal static void GemmBlockedKernel(Index1D index, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c,
                                           ArrayView<float> bias, GemmArgs p)
    {
        int blocksM = (p.M + BlockM - 1) / BlockM;
        int perMatrix = blocksM * p.BlocksN;
        int linear = index;
        int batch = linear / perMatrix;
        int blockIndex = linear - batch * perMatrix;
        int i0 = blockIndex / p.BlocksN * BlockM;
        int j0 = blockIndex % p.BlocksN * BlockN;

        // opA[i,k] = a[aBase + i·sAi + k·sAk];  opB[k,j] = b[bBase + k·sBk + j·sBj]
        int sAi = p.TransposeA != 0 ? 1 : p.K;
        int sAk = p.TransposeA != 0 ? p.M : 1;
        int sBk = p.TransposeB != 0 ? 1 : p.N;
        int sBj = p.TransposeB != 0 ? p.K : 1;
        int aBase = batch * p.M * p.K;
        int bBase = batch * p.K * p.N;
        int cBase = batch * p.M * p.N;
        int lastRow = p.M - 1, lastCol = p.N - 1;
        int aRow0 = aBase + i0 * sAi; int aRow1 = aBase + IntrinsicMath.Min(i0 + 1, lastRow) * sAi;
        int aRow2 = aBase + IntrinsicMath.Min(i0 + 2, lastRow) * sAi; int aRow3 = aBase + IntrinsicMath.Min(i0 + 3, lastRow) * sAi;
        int aRow4 = aBase + IntrinsicMath.Min(i0 + 4, lastRow) * sAi; int aRow5 = aBase + IntrinsicMath.Min(i0 + 5, lastRow) * sAi;
        int aRow6 = aBase + IntrinsicMath.Min(i0 + 6, lastRow) * sAi; int aRow7 = aBase + IntrinsicMath.Min(i0 + 7, lastRow) * sAi;
        int aRow8 = aBase + IntrinsicMath.Min(i0 + 8, lastRow) * sAi; int aRow9 = aBase + IntrinsicMath.Min(i0 + 9, lastRow) * sAi;
        int aRow10 = aBase + IntrinsicMath.Min(i0 + 10, lastRow) * sAi; int aRow11 = aBase + IntrinsicMath.Min(i0 + 11, lastRow) * sAi;
        int aRow12 = aBase + IntrinsicMath.Min(i0 + 12, lastRow) * sAi; int aRow13 = aBase + IntrinsicMath.Min(i0 + 13, lastRow) * sAi;
        int aRow14 = aBase + IntrinsicMath.Min(i0 + 14, lastRow) * sAi; int aRow15 = aBase + IntrinsicMath.Min(i0 + 15, lastRow) * sAi;
        int bCol0 = bBase + j0 * sBj; int bCol1 = bBase + IntrinsicMath.Min(j0 + 1, lastCol) * sBj;
        int bCol2 = bBase + IntrinsicMath.Min(j0 + 2, lastCol) * sBj; int bCol3 = bBase + IntrinsicMath.Min(j0 + 3, lastCol) * sBj;
        int bCol4 = bBase + IntrinsicMath.Min(j0 + 4, lastCol) * sBj; int bCol5 = bBase + IntrinsicMath.Min(j0 + 5, lastCol) * sBj;
        int bCol6 = bBase + IntrinsicMath.Min(j0 + 6, lastCol) * sBj; int bCol7 = bBase + IntrinsicMath.Min(j0 + 7, lastCol) * sBj;
        int bCol8 = bBase + IntrinsicMath.Min(j0 + 8, lastCol) * sBj; int bCol9 = bBase + IntrinsicMath.Min(j0 + 9, lastCol) * sBj;
        int bCol10 = bBase + IntrinsicMath.Min(j0 + 10, lastCol) * sBj; int bCol11 = bBase + IntrinsicMath.Min(j0 + 11, lastCol) * sBj;
        int bCol12 = bBase + IntrinsicMath.Min(j0 + 12, lastCol) * sBj; int bCol13 = bBase + IntrinsicMath.Min(j0 + 13, lastCol) * sBj;
        int bCol14 = bBase + IntrinsicMath.Min(j0 + 14, lastCol) * sBj; int bCol15 = bBase + IntrinsicMath.Min(j0 + 15, lastCol) * sBj;

        float c0_0 = 0f, c0_1 = 0f, c0_2 = 0f, c0_3 = 0f, c0_4 = 0f, c0_5 = 0f, c0_6 = 0f, c0_7 = 0f, c0_8 = 0f, c0_9 = 0f, c0_10 = 0f, c0_11 = 0f, c0_12 = 0f, c0_13 = 0f, c0_14 = 0f, c0_15 = 0f;
        float c1_0 = 0f, c1_1 = 0f, c1_2 = 0f, c1_3 = 0f, c1_4 = 0f, c1_5 = 0f, c1_6 = 0f, c1_7 = 0f, c1_8 = 0f, c1_9 = 0f, c1_10 = 0f, c1_11 = 0f, c1_12 = 0f, c1_13 = 0f, c1_14 = 0f, c1_15 = 0f;
        float c2_0 = 0f, c2_1 = 0f, c2_2 = 0f, c2_3 = 0f, c2_4 = 0f, c2_5 = 0f, c2_6 = 0f, c2_7 = 0f, c2_8 = 0f, c2_9 = 0f, c2_10 = 0f, c2_11 = 0f, c2_12 = 0f, c2_13 = 0f, c2_14 = 0f, c2_15 = 0f;
        float c3_0 = 0f, c3_1 = 0f, c3_2 = 0f, c3_3 = 0f, c3_4 = 0f, c3_5 = 0f, c3_6 = 0f, c3_7 = 0f, c3_8 = 0f, c3_9 = 0f, c3_10 = 0f, c3_11 = 0f, c3_12 = 0f, c3_13 = 0f, c3_14 = 0f, c3_15 = 0f;
        float c4_0 = 0f, c4_1 = 0f, c4_2 = 0f, c4_3 = 0f, c4_4 = 0f, c4_5 = 0f, c4_6 = 0f, c4_7 = 0f, c4_8 = 0f, c4_9 = 0f, c4_10 = 0f, c4_11 = 0f, c4_12 = 0f, c4_13 = 0f, c4_14 = 0f, c4_15 = 0f;
        float c5_0 = 0f, c5_1 = 0f, c5_2 = 0f, c5_3 = 0f, c5_4 = 0f, c5_5 = 0f, c5_6 = 0f, c5_7 = 0f, c5_8 = 0f, c5_9 = 0f, c5_10 = 0f, c5_11 = 0f, c5_12 = 0f, c5_13 = 0f, c5_14 = 0f, c5_15 = 0f;
        float c6_0 = 0f, c6_1 = 0f, c6_2 = 0f, c6_3 = 0f, c6_4 = 0f, c6_5 = 0f, c6_6 = 0f, c6_7 = 0f, c6_8 = 0f, c6_9 = 0f, c6_10 = 0f, c6_11 = 0f, c6_12 = 0f, c6_13 = 0f, c6_14 = 0f, c6_15 = 0f;
        float c7_0 = 0f, c7_1 = 0f, c7_2 = 0f, c7_3 = 0f, c7_4 = 0f, c7_5 = 0f, c7_6 = 0f, c7_7 = 0f, c7_8 = 0f, c7_9 = 0f, c7_10 = 0f, c7_11 = 0f, c7_12 = 0f, c7_13 = 0f, c7_14 = 0f, c7_15 = 0f;
        float c8_0 = 0f, c8_1 = 0f, c8_2 = 0f, c8_3 = 0f, c8_4 = 0f, c8_5 = 0f, c8_6 = 0f, c8_7 = 0f, c8_8 = 0f, c8_9 = 0f, c8_10 = 0f, c8_11 = 0f, c8_12 = 0f, c8_13 = 0f, c8_14 = 0f, c8_15 = 0f;
        float c9_0 = 0f, c9_1 = 0f, c9_2 = 0f, c9_3 = 0f, c9_4 = 0f, c9_5 = 0f, c9_6 = 0f, c9_7 = 0f, c9_8 = 0f, c9_9 = 0f, c9_10 = 0f, c9_11 = 0f, c9_12 = 0f, c9_13 = 0f, c9_14 = 0f, c9_15 = 0f;
        float c10_0 = 0f, c10_1 = 0f, c10_2 = 0f, c10_3 = 0f, c10_4 = 0f, c10_5 = 0f, c10_6 = 0f, c10_7 = 0f, c10_8 = 0f, c10_9 = 0f, c10_10 = 0f, c10_11 = 0f, c10_12 = 0f, c10_13 = 0f, c10_14 = 0f, c10_15 = 0f;
        float c11_0 = 0f, c11_1 = 0f, c11_2 = 0f, c11_3 = 0f, c11_4 = 0f, c11_5 = 0f, c11_6 = 0f, c11_7 = 0f, c11_8 = 0f, c11_9 = 0f, c11_10 = 0f, c11_11 = 0f, c11_12 = 0f, c11_13 = 0f, c11_14 = 0f, c11_15 = 0f;
        float c12_0 = 0f, c12_1 = 0f, c12_2 = 0f, c12_3 = 0f, c12_4 = 0f, c12_5 = 0f, c12_6 = 0f, c12_7 = 0f, c12_8 = 0f, c12_9 = 0f, c12_10 = 0f, c12_11 = 0f, c12_12 = 0f, c12_13 = 0f, c12_14 = 0f, c12_15 = 0f;
        float c13_0 = 0f, c13_1 = 0f, c13_2 = 0f, c13_3 = 0f, c13_4 = 0f, c13_5 = 0f, c13_6 = 0f, c13_7 = 0f, c13_8 = 0f, c13_9 = 0f, c13_10 = 0f, c13_11 = 0f, c13_12 = 0f, c13_13 = 0f, c13_14 = 0f, c13_15 = 0f;
        float c14_0 = 0f, c14_1 = 0f, c14_2 = 0f, c14_3 = 0f, c14_4 = 0f, c14_5 = 0f, c14_6 = 0f, c14_7 = 0f, c14_8 = 0f, c14_9 = 0f, c14_10 = 0f, c14_11 = 0f, c14_12 = 0f, c14_13 = 0f, c14_14 = 0f, c14_15 = 0f;
        float c15_0 = 0f, c15_1 = 0f, c15_2 = 0f, c15_3 = 0f, c15_4 = 0f, c15_5 = 0f, c15_6 = 0f, c15_7 = 0f, c15_8 = 0f, c15_9 = 0f, c15_10 = 0f, c15_11 = 0f, c15_12 = 0f, c15_13 = 0f, c15_14 = 0f, c15_15 = 0f;
        int ka = 0, kb = 0, k = 0;
        for (; k + 1 <= p.K; k += 1)
        {
            {
                float a0 = a[aRow0 + ka]; float a1 = a[aRow1 + ka]; float a2 = a[aRow2 + ka]; float a3 = a[aRow3 + ka];
                float a4 = a[aRow4 + ka]; float a5 = a[aRow5 + ka]; float a6 = a[aRow6 + ka]; float a7 = a[aRow7 + ka];
                float a8 = a[aRow8 + ka]; float a9 = a[aRow9 + ka]; float a10 = a[aRow10 + ka]; float a11 = a[aRow11 + ka];
                float a12 = a[aRow12 + ka]; float a13 = a[aRow13 + ka]; float a14 = a[aRow14 + ka]; float a15 = a[aRow15 + ka];
                float b0 = b[bCol0 + kb]; float b1 = b[bCol1 + kb]; float b2 = b[bCol2 + kb]; float b3 = b[bCol3 + kb];
                float b4 = b[bCol4 + kb]; float b5 = b[bCol5 + kb]; float b6 = b[bCol6 + kb]; float b7 = b[bCol7 + kb];
                float b8 = b[bCol8 + kb]; float b9 = b[bCol9 + kb]; float b10 = b[bCol10 + kb]; float b11 = b[bCol11 + kb];
                float b12 = b[bCol12 + kb]; float b13 = b[bCol13 + kb]; float b14 = b[bCol14 + kb]; float b15 = b[bCol15 + kb];
                c0_0 += a0 * b0; c0_1 += a0 * b1; c0_2 += a0 * b2; c0_3 += a0 * b3; c0_4 += a0 * b4; c0_5 += a0 * b5; c0_6 += a0 * b6; c0_7 += a0 * b7;
                c0_8 += a0 * b8; c0_9 += a0 * b9; c0_10 += a0 * b10; c0_11 += a0 * b11; c0_12 += a0 * b12; c0_13 += a0 * b13; c0_14 += a0 * b14; c0_15 += a0 * b15;
                c1_0 += a1 * b0; c1_1 += a1 * b1; c1_2 += a1 * b2; c1_3 += a1 * b3; c1_4 += a1 * b4; c1_5 += a1 * b5; c1_6 += a1 * b6; c1_7 += a1 * b7;
                c1_8 += a1 * b8; c1_9 += a1 * b9; c1_10 += a1 * b10; c1_11 += a1 * b11; c1_12 += a1 * b12; c1_13 += a1 * b13; c1_14 += a1 * b14; c1_15 += a1 * b15;
                c2_0 += a2 * b0; c2_1 += a2 * b1; c2_2 += a2 * b2; c2_3 += a2 * b3; c2_4 += a2 * b4; c2_5 += a2 * b5; c2_6 += a2 * b6; c2_7 += a2 * b7;
                c2_8 += a2 * b8; c2_9 += a2 * b9; c2_10 += a2 * b10; c2_11 += a2 * b11; c2_12 += a2 * b12; c2_13 += a2 * b13; c2_14 += a2 * b14; c2_15 += a2 * b15;
                c3_0 += a3 * b0; c3_1 += a3 * b1; c3_2 += a3 * b2; c3_3 += a3 * b3; c3_4 += a3 * b4; c3_5 += a3 * b5; c3_6 += a3 * b6; c3_7 += a3 * b7;
                c3_8 += a3 * b8; c3_9 += a3 * b9; c3_10 += a3 * b10; c3_11 += a3 * b11; c3_12 += a3 * b12; c3_13 += a3 * b13; c3_14 += a3 * b14; c3_15 += a3 * b15;
                c4_0 += a4 * b0; c4_1 += a4 * b1; c4_2 += a4 * b2; c4_3 += a4 * b3; c4_4 += a4 * b4; c4_5 += a4 * b5; c4_6 += a4 * b6; c4_7 += a4 * b7;
                c4_8 += a4 * b8; c4_9 += a4 * b9; c4_10 += a4 * b10; c4_11 += a4 * b11; c4_12 += a4 * b12; c4_13 += a4 * b13; c4_14 += a4 * b14; c4_15 += a4 * b15;
                c5_0 += a5 * b0; c5_1 += a5 * b1; c5_2 += a5 * b2; c5_3 += a5 * b3; c5_4 += a5 * b4; c5_5 += a5 * b5; c5_6 += a5 * b6; c5_7 += a5 * b7;
                c5_8 += a5 * b8; c5_9 += a5 * b9; c5_10 += a5 * b10; c5_11 += a5 * b11; c5_12 += a5 * b12; c5_13 += a5 * b13; c5_14 += a5 * b14; c5_15 += a5 * b15;
                c6_0 += a6 * b0; c6_1 += a6 * b1; c6_2 += a6 * b2; c6_3 += a6 * b3; c6_4 += a6 * b4; c6_5 += a6 * b5; c6_6 += a6 * b6; c6_7 += a6 * b7;
                c6_8 += a6 * b8; c6_9 += a6 * b9; c6_10 += a6 * b10; c6_11 += a6 * b11; c6_12 += a6 * b12; c6_13 += a6 * b13; c6_14 += a6 * b14; c6_15 += a6 * b15;
                c7_0 += a7 * b0; c7_1 += a7 * b1; c7_2 += a7 * b2; c7_3 += a7 * b3; c7_4 += a7 * b4; c7_5 += a7 * b5; c7_6 += a7 * b6; c7_7 += a7 * b7;
                c7_8 += a7 * b8; c7_9 += a7 * b9; c7_10 += a7 * b10; c7_11 += a7 * b11; c7_12 += a7 * b12; c7_13 += a7 * b13; c7_14 += a7 * b14; c7_15 += a7 * b15;
                c8_0 += a8 * b0; c8_1 += a8 * b1; c8_2 += a8 * b2; c8_3 += a8 * b3; c8_4 += a8 * b4; c8_5 += a8 * b5; c8_6 += a8 * b6; c8_7 += a8 * b7;
                c8_8 += a8 * b8; c8_9 += a8 * b9; c8_10 += a8 * b10; c8_11 += a8 * b11; c8_12 += a8 * b12; c8_13 += a8 * b13; c8_14 += a8 * b14; c8_15 += a8 * b15;
                c9_0 += a9 * b0; c9_1 += a9 * b1; c9_2 += a9 * b2; c9_3 += a9 * b3; c9_4 += a9 * b4; c9_5 += a9 * b5; c9_6 += a9 * b6; c9_7 += a9 * b7;
                c9_8 += a9 * b8; c9_9 += a9 * b9; c9_10 += a9 * b10; c9_11 += a9 * b11; c9_12 += a9 * b12; c9_13 += a9 * b13; c9_14 += a9 * b14; c9_15 += a9 * b15;
                c10_0 += a10 * b0; c10_1 += a10 * b1; c10_2 += a10 * b2; c10_3 += a10 * b3; c10_4 += a10 * b4; c10_5 += a10 * b5; c10_6 += a10 * b6; c10_7 += a10 * b7;
                c10_8 += a10 * b8; c10_9 += a10 * b9; c10_10 += a10 * b10; c10_11 += a10 * b11; c10_12 += a10 * b12; c10_13 += a10 * b13; c10_14 += a10 * b14; c10_15 += a10 * b15;
                c11_0 += a11 * b0; c11_1 += a11 * b1; c11_2 += a11 * b2; c11_3 += a11 * b3; c11_4 += a11 * b4; c11_5 += a11 * b5; c11_6 += a11 * b6; c11_7 += a11 * b7;
                c11_8 += a11 * b8; c11_9 += a11 * b9; c11_10 += a11 * b10; c11_11 += a11 * b11; c11_12 += a11 * b12; c11_13 += a11 * b13; c11_14 += a11 * b14; c11_15 += a11 * b15;
                c12_0 += a12 * b0; c12_1 += a12 * b1; c12_2 += a12 * b2; c12_3 += a12 * b3; c12_4 += a12 * b4; c12_5 += a12 * b5; c12_6 += a12 * b6; c12_7 += a12 * b7;
                c12_8 += a12 * b8; c12_9 += a12 * b9; c12_10 += a12 * b10; c12_11 += a12 * b11; c12_12 += a12 * b12; c12_13 += a12 * b13; c12_14 += a12 * b14; c12_15 += a12 * b15;
                c13_0 += a13 * b0; c13_1 += a13 * b1; c13_2 += a13 * b2; c13_3 += a13 * b3; c13_4 += a13 * b4; c13_5 += a13 * b5; c13_6 += a13 * b6; c13_7 += a13 * b7;
                c13_8 += a13 * b8; c13_9 += a13 * b9; c13_10 += a13 * b10; c13_11 += a13 * b11; c13_12 += a13 * b12; c13_13 += a13 * b13; c13_14 += a13 * b14; c13_15 += a13 * b15;
                c14_0 += a14 * b0; c14_1 += a14 * b1; c14_2 += a14 * b2; c14_3 += a14 * b3; c14_4 += a14 * b4; c14_5 += a14 * b5; c14_6 += a14 * b6; c14_7 += a14 * b7;
                c14_8 += a14 * b8; c14_9 += a14 * b9; c14_10 += a14 * b10; c14_11 += a14 * b11; c14_12 += a14 * b12; c14_13 += a14 * b13; c14_14 += a14 * b14; c14_15 += a14 * b15;
                c15_0 += a15 * b0; c15_1 += a15 * b1; c15_2 += a15 * b2; c15_3 += a15 * b3; c15_4 += a15 * b4; c15_5 += a15 * b5; c15_6 += a15 * b6; c15_7 += a15 * b7;
                c15_8 += a15 * b8; c15_9 += a15 * b9; c15_10 += a15 * b10; c15_11 += a15 * b11; c15_12 += a15 * b12; c15_13 += a15 * b13; c15_14 += a15 * b14; c15_15 += a15 * b15;
                ka += sAk; kb += sBk;
            }
        }

        StoreRow(c, bias, p, cBase, i0 + 0, j0,
                 c0_0, c0_1, c0_2, c0_3, c0_4, c0_5, c0_6, c0_7,
                 c0_8, c0_9, c0_10, c0_11, c0_12, c0_13, c0_14, c0_15);
        StoreRow(c, bias, p, cBase, i0 + 1, j0,
                 c1_0, c1_1, c1_2, c1_3, c1_4, c1_5, c1_6, c1_7,
                 c1_8, c1_9, c1_10, c1_11, c1_12, c1_13, c1_14, c1_15);
        StoreRow(c, bias, p, cBase, i0 + 2, j0,
                 c2_0, c2_1, c2_2, c2_3, c2_4, c2_5, c2_6, c2_7,
                 c2_8, c2_9, c2_10, c2_11, c2_12, c2_13, c2_14, c2_15);
        StoreRow(c, bias, p, cBase, i0 + 3, j0,
                 c3_0, c3_1, c3_2, c3_3, c3_4, c3_5, c3_6, c3_7,
                 c3_8, c3_9, c3_10, c3_11, c3_12, c3_13, c3_14, c3_15);
        StoreRow(c, bias, p, cBase, i0 + 4, j0,
                 c4_0, c4_1, c4_2, c4_3, c4_4, c4_5, c4_6, c4_7,
                 c4_8, c4_9, c4_10, c4_11, c4_12, c4_13, c4_14, c4_15);
        StoreRow(c, bias, p, cBase, i0 + 5, j0,
                 c5_0, c5_1, c5_2, c5_3, c5_4, c5_5, c5_6, c5_7,
                 c5_8, c5_9, c5_10, c5_11, c5_12, c5_13, c5_14, c5_15);
        StoreRow(c, bias, p, cBase, i0 + 6, j0,
                 c6_0, c6_1, c6_2, c6_3, c6_4, c6_5, c6_6, c6_7,
                 c6_8, c6_9, c6_10, c6_11, c6_12, c6_13, c6_14, c6_15);
        StoreRow(c, bias, p, cBase, i0 + 7, j0,
                 c7_0, c7_1, c7_2, c7_3, c7_4, c7_5, c7_6, c7_7,
                 c7_8, c7_9, c7_10, c7_11, c7_12, c7_13, c7_14, c7_15);
        StoreRow(c, bias, p, cBase, i0 + 8, j0,
                 c8_0, c8_1, c8_2, c8_3, c8_4, c8_5, c8_6, c8_7,
                 c8_8, c8_9, c8_10, c8_11, c8_12, c8_13, c8_14, c8_15);
        StoreRow(c, bias, p, cBase, i0 + 9, j0,
                 c9_0, c9_1, c9_2, c9_3, c9_4, c9_5, c9_6, c9_7,
                 c9_8, c9_9, c9_10, c9_11, c9_12, c9_13, c9_14, c9_15);
        StoreRow(c, bias, p, cBase, i0 + 10, j0,
                 c10_0, c10_1, c10_2, c10_3, c10_4, c10_5, c10_6, c10_7,
                 c10_8, c10_9, c10_10, c10_11, c10_12, c10_13, c10_14, c10_15);
        StoreRow(c, bias, p, cBase, i0 + 11, j0,
                 c11_0, c11_1, c11_2, c11_3, c11_4, c11_5, c11_6, c11_7,
                 c11_8, c11_9, c11_10, c11_11, c11_12, c11_13, c11_14, c11_15);
        StoreRow(c, bias, p, cBase, i0 + 12, j0,
                 c12_0, c12_1, c12_2, c12_3, c12_4, c12_5, c12_6, c12_7,
                 c12_8, c12_9, c12_10, c12_11, c12_12, c12_13, c12_14, c12_15);
        StoreRow(c, bias, p, cBase, i0 + 13, j0,
                 c13_0, c13_1, c13_2, c13_3, c13_4, c13_5, c13_6, c13_7,
                 c13_8, c13_9, c13_10, c13_11, c13_12, c13_13, c13_14, c13_15);
        StoreRow(c, bias, p, cBase, i0 + 14, j0,
                 c14_0, c14_1, c14_2, c14_3, c14_4, c14_5, c14_6, c14_7,
                 c14_8, c14_9, c14_10, c14_11, c14_12, c14_13, c14_14, c14_15);
        StoreRow(c, bias, p, cBase, i0 + 15, j0,
                 c15_0, c15_1, c15_2, c15_3, c15_4, c15_5, c15_6, c15_7,
                 c15_8, c15_9, c15_10, c15_11, c15_12, c15_13, c15_14, c15_15);
    }

    // Tiled GEMM, explicitly grouped: group (x, y, z) = (column tile, row tile, batch) computes the 64×64
    // tile of C at rows 64y.., columns 64x.. of matrix z; thread (tx, ty) of the 16×16 group owns rows
    // 64y + ty + 16r and columns 64x + tx + 16c (r, c = 0..3), so shared reads are broadcast/conflict-free
    // and stores coalesce along tx. Per 16-deep step the group stages op(A) 64×16 and op(B) 16×64
    // (zero-padded at the edges) in shared memory, k-major, then each thread does 16 × 16 multiply-adds.
    // Shapes and formula as GemmBlockedKernel; the sum over k runs in ascending order.
    internal static void GemmTiledKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c,
                                         ArrayView<float> bias, GemmArgs p)
    {
        var tileA = SharedMemory.Allocate<float>(TileK * TileStride); // tileA[kk·65 + ii] = opA[i0 + ii, k0 + kk]
        var tileB = SharedMemory.Allocate<float>(TileK * TileStride); // tileB[kk·65 + jj] = opB[k0 + kk, j0 + jj]
        int tx = Group.IdxX, ty = Group.IdxY;
        int tid = ty * GroupSide + tx;
        int i0 = Grid.IdxY * Tile, j0 = Grid.IdxX * Tile, batch = Grid.IdxZ;
        int aBase = batch * p.M * p.K;
        int bBase = batch * p.K * p.N;
        int cBase = batch * p.M * p.N;

        float c0_0 = 0f, c0_1 = 0f, c0_2 = 0f, c0_3 = 0f;
        float c1_0 = 0f, c1_1 = 0f, c1_2 = 0f, c1_3 = 0f;
        float c2_0 = 0f, c2_1 = 0f, c2_2 = 0f, c2_3 = 0f;
        float c3_0 = 0f, c3_1 = 0f, c3_2 = 0f, c3_3 = 0f;
        for (int k0 = 0; k0 < p.K; k0 += TileK)
        {
            // Stage the tiles: 1024 elements each, 4 per thread, consecutive threads on consecutive addresses.
            for (int q = 0; q < Tile * TileK / (GroupSide * GroupSide); q++)
            {
                int e = tid + q * GroupSide * GroupSide;
                int ii, kk;
                if (p.TransposeA != 0) { ii = e & (Tile - 1); kk = e / Tile; }
                else { kk = e & (TileK - 1); ii = e / TileK; }
                int gi = i0 + ii, gk = k0 + kk;
                float v = 0f;
                if (gi < p.M && gk < p.K)
                    v = a[aBase + (p.TransposeA != 0 ? gk * p.M + gi : gi * p.K + gk)];
                tileA[kk * TileStride + ii] = v;

                int jj;
                if (p.TransposeB != 0) { kk = e & (TileK - 1); jj = e / TileK; }
                else { jj = e & (Tile - 1); kk = e / Tile; }
                int gj = j0 + jj;
                gk = k0 + kk;
                float w = 0f;
                if (gj < p.N && gk < p.K)
                    w = b[bBase + (p.TransposeB != 0 ? gj * p.K + gk : gk * p.N + gj)];
                tileB[kk * TileStride + jj] = w;
            }
            Group.Barrier();

            int t = 0;
            for (int s = 0; s < TileK / 4; s++)
            {
                {
                    float a0 = tileA[t + ty + 0]; float a1 = tileA[t + ty + 16]; float a2 = tileA[t + ty + 32]; float a3 = tileA[t + ty + 48];
                    float b0 = tileB[t + tx + 0]; float b1 = tileB[t + tx + 16]; float b2 = tileB[t + tx + 32]; float b3 = tileB[t + tx + 48];
                    c0_0 += a0 * b0; c0_1 += a0 * b1; c0_2 += a0 * b2; c0_3 += a0 * b3;
                    c1_0 += a1 * b0; c1_1 += a1 * b1; c1_2 += a1 * b2; c1_3 += a1 * b3;
                    c2_0 += a2 * b0; c2_1 += a2 * b1; c2_2 += a2 * b2; c2_3 += a2 * b3;
                    c3_0 += a3 * b0; c3_1 += a3 * b1; c3_2 += a3 * b2; c3_3 += a3 * b3;
                    t += TileStride;
                }
                {
                    float a0 = tileA[t + ty + 0]; float a1 = tileA[t + ty + 16]; float a2 = tileA[t + ty + 32]; float a3 = tileA[t + ty + 48];
                    float b0 = tileB[t + tx + 0]; float b1 = tileB[t + tx + 16]; float b2 = tileB[t + tx + 32]; float b3 = tileB[t + tx + 48];
                    c0_0 += a0 * b0; c0_1 += a0 * b1; c0_2 += a0 * b2; c0_3 += a0 * b3;
                    c1_0 += a1 * b0; c1_1 += a1 * b1; c1_2 += a1 * b2; c1_3 += a1 * b3;
                    c2_0 += a2 * b0; c2_1 += a2 * b1; c2_2 += a2 * b2; c2_3 += a2 * b3;
                    c3_0 += a3 * b0; c3_1 += a3 * b1; c3_2 += a3 * b2; c3_3 += a3 * b3;
                    t += TileStride;
                }
                {
                    float a0 = tileA[t + ty + 0]; float a1 = tileA[t + ty + 16]; float a2 = tileA[t + ty + 32]; float a3 = tileA[t + ty + 48];
                    float b0 = tileB[t + tx + 0]; float b1 = tileB[t + tx + 16]; float b2 = tileB[t + tx + 32]; float b3 = tileB[t + tx + 48];
                    c0_0 += a0 * b0; c0_1 += a0 * b1; c0_2 += a0 * b2; c0_3 += a0 * b3;
                    c1_0 += a1 * b0; c1_1 += a1 * b1; c1_2 += a1 * b2; c1_3 += a1 * b3;
                    c2_0 += a2 * b0; c2_1 += a2 * b1; c2_2 += a2 * b2; c2_3 += a2 * b3;
                    c3_0 += a3 * b0; c3_1 += a3 * b1; c3_2 += a3 * b2; c3_3 += a3 * b3;
                    t += TileStride;
                }
                {
                    float a0 = tileA[t + ty + 0]; float a1 = tileA[t + ty + 16]; float a2 = tileA[t + ty + 32]; float a3 = tileA[t + ty + 48];
                    float b0 = tileB[t + tx + 0]; float b1 = tileB[t + tx + 16]; float b2 = tileB[t + tx + 32]; float b3 = tileB[t + tx + 48];
                    c0_0 += a0 * b0; c0_1 += a0 * b1; c0_2 += a0 * b2; c0_3 += a0 * b3;
                    c1_0 += a1 * b0; c1_1 += a1 * b1; c1_2 += a1 * b2; c1_3 += a1 * b3;
                    c2_0 += a2 * b0; c2_1 += a2 * b1; c2_2 += a2 * b2; c2_3 += a2 * b3;
                    c3_0 += a3 * b0; c3_1 += a3 * b1; c3_2 += a3 * b2; c3_3 += a3 * b3;
                    t += TileStride;
                }
            }
            Group.Barrier();
        }

        StoreOutput(c, bias, p, cBase, i0 + ty + 0, j0 + tx + 0, c0_0);
        StoreOutput(c, bias, p, cBase, i0 + ty + 0, j0 + tx + 16, c0_1);
        StoreOutput(c, bias, p, cBase, i0 + ty + 0, j0 + tx + 32, c0_2);
        StoreOutput(c, bias, p, cBase, i0 + ty + 0, j0 + tx + 48, c0_3);
        StoreOutput(c, bias, p, cBase, i0 + ty + 16, j0 + tx + 0, c1_0);
        StoreOutput(c, bias, p, cBase, i0 + ty + 16, j0 + tx + 16, c1_1);
        StoreOutput(c, bias, p, cBase, i0 + ty + 16, j0 + tx + 32, c1_2);
        StoreOutput(c, bias, p, cBase, i0 + ty + 16, j0 + tx + 48, c1_3);
        StoreOutput(c, bias, p, cBase, i0 + ty + 32, j0 + tx + 0, c2_0);
        StoreOutput(c, bias, p, cBase, i0 + ty + 32, j0 + tx + 16, c2_1);
        StoreOutput(c, bias, p, cBase, i0 + ty + 32, j0 + tx + 32, c2_2);
        StoreOutput(c, bias, p, cBase, i0 + ty + 32, j0 + tx + 48, c2_3);
        StoreOutput(c, bias, p, cBase, i0 + ty + 48, j0 + tx + 0, c3_0);
        StoreOutput(c, bias, p, cBase, i0 + ty + 48, j0 + tx + 16, c3_1);
        StoreOutput(c, bias, p, cBase, i0 + ty + 48, j0 + tx + 32, c3_2);
        StoreOutput(c, bias, p, cBase, i0 + ty + 48, j0 + tx + 48, c3_3);
    }

    // ---------------------------------------------------------------------------------------------
    // Bias gradient: db[j] += Σ_r dy[r, j]
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// Bias gradient of <c>y = x·Wᵀ + b</c>: <c>db[j] += Σ_r dy[r, j]</c> over the <paramref name="rows"/>
    /// rows of dy [rows, cols]. ADDS into <paramref name="db"/> [cols]. One thread per column, rows in order
    /// (deterministic, no atomics).
    /// </summary>
    public void BiasBackward(ArrayView<float> dy, ArrayView<float> db, int rows, int cols)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentException($"bias backward: rows and cols must be positive, got {rows}×{cols}");
        if (dy.Length != (long)rows * cols) throw new ArgumentException($"bias backward: dy must be [{rows}, {cols}] = {(long)rows * cols} elements, got {dy.Length}");
        if (db.Length != cols) throw new ArgumentException($"bias backward: db must have {cols} elements, got {db.Length}");
        biasBackward(device.Stream, cols, dy, db, rows, cols);
    }

    // dy [rows, cols] -> db [cols] += column sums (Linear's ∂L/∂b = Σ_n ∂L/∂y[n, :])
    internal static void BiasBackwardKernel(Index1D j, ArrayView<float> dy, ArrayView<float> db, int rows, int cols)
    {
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
        int r = 0, at = j.X;
        for (; r + 4 <= rows; r += 4, at += 4 * cols)
        {
            s0 += dy[at];
            s1 += dy[at + cols];
            s2 += dy[at + 2 * cols];
            s3 += dy[at + 3 * cols];
        }
        for (; r < rows; r++, at += cols) s0 += dy[at];
        db[j] += (s0 + s1) + (s2 + s3);
    }
}
