using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Matmul;

// One GEMM core for every product in the network: C[b] = op(A[b])·op(B[b]), op(A) M×K, op(B) K×N, summed
// over k in ascending order by one thread per element (deterministic, no atomics). What A and B are — a
// matrix, its transpose, an im2col view of an image, a gather of a gradient — is a struct operand; what
// happens to a finished element — bias, accumulation, a scatter into NCHW — is a struct epilogue. ILGPU
// specialises a generic kernel per struct type argument (its GenericKernel sample), so the loads inline
// as if hand-written. Matmul, conv forward / backward-input / backward-weight and attention's products all
// run these kernels (docs/kernels.md).

/// <summary>One element of a GEMM operand: op(A)[batch, i, k] or op(B)[batch, k, j]; indices are in range.</summary>
internal interface IGemmOperand
{
    /// <summary>The element at (<paramref name="row"/>, <paramref name="col"/>) of matrix <paramref name="batch"/>; 0 for padding.</summary>
    float Load(int batch, int row, int col);

    /// <summary>Whether elements consecutive in k are consecutive in memory (picks the coalesced staging order).</summary>
    bool ContiguousInK { get; }
}

/// <summary>What happens to one finished element of C (bias, accumulation, an activation, a scatter).</summary>
internal interface IGemmEpilogue
{
    /// <summary>Writes <paramref name="sum"/> = Σ_k op(A)[batch,i,k]·op(B)[batch,k,j]; (i, j) lies inside C.</summary>
    void Store(int batch, int i, int j, float sum);

    /// <summary>
    /// The tiled kernel's last word on a tile once all its elements are stored, called by every thread of the group
    /// (thread (tx, ty) owns rows i0 + ty + 8r, columns j0 + tx + 8c) with the group's free shared floats. Empty but
    /// for <see cref="SplitSumStore"/>, which sums a tile's split partials there.
    /// </summary>
    void FinishTile(int i0, int j0, int tx, int ty, ArrayView<float> scratch);
}

/// <summary>The size of each product of a launch; the number of products is the grid's third dimension.</summary>
internal struct GemmSize
{
    public int M, N, K;
    /// <summary>Register blocks per row of C (the barrier-free CPU kernel).</summary>
    public int BlocksN;
}

/// <summary>
/// A strided matrix: op[batch, row, col] = View[batch·BatchStride + row·RowStride + col·ColStride]. Covers a
/// row-major matrix, its transpose, and (BatchStride 0) one matrix shared by every product.
/// </summary>
internal struct Strided : IGemmOperand
{
    public ArrayView<float> View;
    public int BatchStride, RowStride, ColStride;
    public int KContiguous;

    /// <summary>op(A) M×K of a [M, K] (or, transposed, [K, M]) matrix per product.</summary>
    public static Strided A(ArrayView<float> view, int m, int k, bool transposed, int batchStride) =>
        new() { View = view, BatchStride = batchStride, RowStride = transposed ? 1 : k, ColStride = transposed ? m : 1, KContiguous = transposed ? 0 : 1 };

    /// <summary>op(B) K×N of a [K, N] (or, transposed, [N, K]) matrix per product.</summary>
    public static Strided B(ArrayView<float> view, int k, int n, bool transposed, int batchStride) =>
        new() { View = view, BatchStride = batchStride, RowStride = transposed ? 1 : n, ColStride = transposed ? k : 1, KContiguous = transposed ? 1 : 0 };

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float Load(int batch, int row, int col) => View[batch * BatchStride + row * RowStride + col * ColStride];

    /// <inheritdoc/>
    public readonly bool ContiguousInK => KContiguous != 0;
}

/// <summary>
/// C[b, i, j] = Alpha·sum (+ Bias[j] when HasBias) (+ the old C when Accumulate), C [batch, M, N] row-major:
/// matmul, Linear, the conv weight gradient and its per-split partial sums.
/// </summary>
internal struct MatrixStore : IGemmEpilogue
{
    public ArrayView<float> C, Bias;
    public int M, N, Accumulate, HasBias;
    public float Alpha;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store(int batch, int i, int j, float sum)
    {
        int index = (batch * M + i) * N + j;
        float v = Alpha * sum;
        if (HasBias != 0) v += Bias[j];
        if (Accumulate != 0) v += C[index];
        C[index] = v;
    }

    /// <inheritdoc/>
    public readonly void FinishTile(int i0, int j0, int tx, int ty, ArrayView<float> scratch) { }
}

/// <summary>
/// A weight gradient's epilogue: column j &lt; Weights of a [M, Columns] product adds into dw [M, Weights], the column
/// past them (Columns = Weights + 1, the bias gradient's: op(B) ends in a column of ones) into db [M]. Conv and Linear:
/// one GEMM for both gradients (issue 9).
/// </summary>
internal struct WeightBiasStore : IGemmEpilogue
{
    public ArrayView<float> Dw, Db;
    public int Weights, Columns;

    /// <inheritdoc/>
    public readonly void Store(int batch, int i, int j, float sum)
    {
        if (j < Weights) Dw[i * Weights + j] += sum;
        else Db[i] += sum;
    }

    /// <inheritdoc/>
    public readonly void FinishTile(int i0, int j0, int tx, int ty, ArrayView<float> scratch) { }
}

/// <summary>
/// Split-K without a second launch (issue 9): product z of a launch whose Splits products each sum one slice of the
/// reduction stores its tile into Partial [Splits, M, Columns]; then the group takes a ticket for its tile (an integer
/// atomic add, after a device-level fence that publishes its partial), and the group that draws the last one sums the
/// tile's Splits partials in split order, 0 first, into <see cref="Into"/> and puts the ticket back to 0. Which group
/// finishes depends on timing, the order of the sum does not: the bits are the same on every run, no float atomics.
/// Tickets [tiles] must be 0 before the launch (they are after every completed one).
/// </summary>
internal struct SplitSumStore : IGemmEpilogue
{
    public ArrayView<float> Partial;
    public ArrayView<int> Tickets;
    public WeightBiasStore Into;
    public int Splits, M, Columns, TilesX;

    /// <inheritdoc/>
    public readonly void Store(int batch, int i, int j, float sum) => Partial[(batch * M + i) * Columns + j] = sum;

    /// <inheritdoc/>
    public readonly void FinishTile(int i0, int j0, int tx, int ty, ArrayView<float> scratch)
    {
        int tile = i0 / GemmCore.Tile * TilesX + j0 / GemmCore.Tile;
        MemoryFence.DeviceLevel(); // this thread's partial stores, before the group's ticket
        Group.Barrier();
        if (tx == 0 && ty == 0) scratch[0] = Atomic.Add(ref Tickets[tile], 1);
        Group.Barrier();
        if (scratch[0] != Splits - 1) return; // the whole group leaves: not the last split of this tile
        MemoryFence.DeviceLevel();
        for (int r = 0; r < GemmCore.Tile; r += GemmCore.GroupSide)
        {
            int i = i0 + ty + r;
            if (i >= M) break;
            for (int c = 0; c < GemmCore.Tile; c += GemmCore.GroupSide)
            {
                int j = j0 + tx + c;
                if (j >= Columns) break;
                float total = 0f;
                for (int z = 0; z < Splits; z++) total += Partial[(z * M + i) * Columns + j];
                Into.Store(0, i, j, total);
            }
        }
        if (tx == 0 && ty == 0) Tickets[tile] = 0;
    }
}

/// <summary>[op(B) | 1]: the operand with one more column of ones past its <c>Columns</c> (a Linear's bias gradient as its weight gradient's last column).</summary>
internal struct OnesColumn<TB> : IGemmOperand where TB : struct, IGemmOperand
{
    public TB Inner;
    public int Columns;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float Load(int batch, int row, int col) => col < Columns ? Inner.Load(batch, row, col) : 1f;

    /// <inheritdoc/>
    public readonly bool ContiguousInK => Inner.ContiguousInK;
}

/// <summary>
/// 16 sums of a 4×4 block of C and its one multiply-add step: the micro-kernel of every GEMM here.
/// Kernels keep these in registers (locals) and unroll around them by hand (ILGPU does not unroll).
/// </summary>
internal struct Block4x4
{
    public float C00, C01, C02, C03, C10, C11, C12, C13, C20, C21, C22, C23, C30, C31, C32, C33;

    /// <summary>C[r, c] += a_r·b_c: one k step, 16 multiply-adds for 8 loaded values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(float a0, float a1, float a2, float a3, float b0, float b1, float b2, float b3)
    {
        C00 += a0 * b0; C01 += a0 * b1; C02 += a0 * b2; C03 += a0 * b3;
        C10 += a1 * b0; C11 += a1 * b1; C12 += a1 * b2; C13 += a1 * b3;
        C20 += a2 * b0; C21 += a2 * b1; C22 += a2 * b2; C23 += a2 * b3;
        C30 += a3 * b0; C31 += a3 * b1; C32 += a3 * b2; C33 += a3 * b3;
    }

    /// <summary>Stores element (r, c) at C[i + r·step, j + c·step], skipping those outside M×N.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store<TE>(TE e, GemmSize s, int batch, int i, int j, int step) where TE : struct, IGemmEpilogue
    {
        StoreRow(e, s, batch, i, j, step, C00, C01, C02, C03);
        StoreRow(e, s, batch, i + step, j, step, C10, C11, C12, C13);
        StoreRow(e, s, batch, i + 2 * step, j, step, C20, C21, C22, C23);
        StoreRow(e, s, batch, i + 3 * step, j, step, C30, C31, C32, C33);
    }

    private static void StoreRow<TE>(TE e, GemmSize s, int batch, int i, int j, int step, float v0, float v1, float v2, float v3)
        where TE : struct, IGemmEpilogue
    {
        if (i >= s.M) return;
        if (j < s.N) e.Store(batch, i, j, v0);
        if (j + step < s.N) e.Store(batch, i, j + step, v1);
        if (j + 2 * step < s.N) e.Store(batch, i, j + 2 * step, v2);
        if (j + 3 * step < s.N) e.Store(batch, i, j + 3 * step, v3);
    }
}

/// <summary>
/// An 8×8 block of C as four <see cref="Block4x4"/>s: rows r and columns c of the block sit at i + r·step and
/// j + c·step of C (step 1: a contiguous block; step 8: the tiled kernel's interleaved one).
/// </summary>
internal struct Block8x8
{
    public Block4x4 C00, C01, C10, C11;

    /// <summary>One k step: 64 multiply-adds for 16 loaded values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(float a0, float a1, float a2, float a3, float a4, float a5, float a6, float a7,
                    float b0, float b1, float b2, float b3, float b4, float b5, float b6, float b7)
    {
        C00.Add(a0, a1, a2, a3, b0, b1, b2, b3);
        C01.Add(a0, a1, a2, a3, b4, b5, b6, b7);
        C10.Add(a4, a5, a6, a7, b0, b1, b2, b3);
        C11.Add(a4, a5, a6, a7, b4, b5, b6, b7);
    }

    /// <summary>Stores the block with its corner at C[i, j], skipping elements outside M×N.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Store<TE>(TE e, GemmSize s, int batch, int i, int j, int step) where TE : struct, IGemmEpilogue
    {
        C00.Store(e, s, batch, i, j, step);
        C01.Store(e, s, batch, i, j + 4 * step, step);
        C10.Store(e, s, batch, i + 4 * step, j, step);
        C11.Store(e, s, batch, i + 4 * step, j + 4 * step, step);
    }
}

/// <summary>
/// The GEMM core: <see cref="Run{TA, TB, TE}"/> launches <see cref="TiledGemm{TA, TB, TE}"/> on GPUs (or when
/// asked) and <see cref="BlockedGemm{TA, TB, TE}"/> on the CPU accelerator, through the one launch path
/// (<see cref="ComputeDevice.Launch{TKernel}(int, in TKernel)"/>), which loads each instantiation once per device.
/// </summary>
internal static partial class GemmCore
{
    /// <summary>Edge of the C tile one group of the tiled kernel computes.</summary>
    internal const int Tile = 64;

    /// <summary>Depth of the A and B slices staged in shared memory per barrier pair.</summary>
    internal const int TileK = 16;

    /// <summary>Threads per group edge in the tiled kernel (8×8 = 64 threads, 8×8 outputs each).</summary>
    internal const int GroupSide = 8;

    /// <summary>
    /// <paramref name="batch"/> products of op(A) M×K by op(B) K×N into the epilogue; <paramref name="tiled"/>
    /// picks the shared-memory kernel, else the register-blocked one.
    /// </summary>
    public static void Run<TA, TB, TE>(ComputeDevice device, TA a, TB b, TE epilogue, int batch, int m, int n, int k, bool tiled)
        where TA : struct, IGemmOperand where TB : struct, IGemmOperand where TE : struct, IGemmEpilogue
    {
        if (tiled)
        {
            var size = new GemmSize { M = m, N = n, K = k, BlocksN = (n + Tile - 1) / Tile };
            var groups = new Index3D(size.BlocksN, (m + Tile - 1) / Tile, batch);
            device.Launch(new KernelConfig(groups, new Index3D(GroupSide, GroupSide, 1)), new TiledGemm<TA, TB, TE>(a, b, epilogue, size));
            return;
        }
        var blocked = new GemmSize { M = m, N = n, K = k, BlocksN = (n + Block - 1) / Block };
        long threads = (long)batch * ((m + Block - 1) / Block) * blocked.BlocksN;
        if (threads > int.MaxValue) throw new ArgumentException($"gemm {batch}×{m}×{n}×{k}: too many register blocks for a 32-bit launch");
        device.Launch((int)threads, new BlockedGemm<TA, TB, TE>(a, b, epilogue, blocked));
    }

    /// <summary>
    /// Two independent products in one launch of the tiled kernel (a grouped GEMM, issue 9): the grid's third dimension
    /// runs the first's <paramref name="batch1"/> products, then the second's; groups outside a product's tiles return.
    /// The convolution's backward passes use it: the input gradient and the weight gradient read the same dy.
    /// </summary>
    public static void RunPair<TA1, TB1, TE1, TA2, TB2, TE2>(ComputeDevice device, TA1 a1, TB1 b1, TE1 e1, int batch1, int m1, int n1, int k1,
                                                             TA2 a2, TB2 b2, TE2 e2, int batch2, int m2, int n2, int k2)
        where TA1 : struct, IGemmOperand where TB1 : struct, IGemmOperand where TE1 : struct, IGemmEpilogue
        where TA2 : struct, IGemmOperand where TB2 : struct, IGemmOperand where TE2 : struct, IGemmEpilogue
    {
        var s1 = new GemmSize { M = m1, N = n1, K = k1, BlocksN = (n1 + Tile - 1) / Tile };
        var s2 = new GemmSize { M = m2, N = n2, K = k2, BlocksN = (n2 + Tile - 1) / Tile };
        int rows1 = (m1 + Tile - 1) / Tile, rows2 = (m2 + Tile - 1) / Tile;
        var groups = new Index3D(Math.Max(s1.BlocksN, s2.BlocksN), Math.Max(rows1, rows2), batch1 + batch2);
        device.Launch(new KernelConfig(groups, new Index3D(GroupSide, GroupSide, 1)),
            new TiledGemmPair<TA1, TB1, TE1, TA2, TB2, TE2>(new(a1, b1, e1, s1), new(a2, b2, e2, s2), batch1, s1.BlocksN, rows1, s2.BlocksN, rows2));
    }

    /// <summary>The paired kernel struct of two operand/epilogue choices (the PTX tests compile those launched).</summary>
    internal static Type PairKernel<TA1, TB1, TE1, TA2, TB2, TE2>()
        where TA1 : struct, IGemmOperand where TB1 : struct, IGemmOperand where TE1 : struct, IGemmEpilogue
        where TA2 : struct, IGemmOperand where TB2 : struct, IGemmOperand where TE2 : struct, IGemmEpilogue =>
        typeof(TiledGemmPair<TA1, TB1, TE1, TA2, TB2, TE2>);

    /// <summary>The two kernel structs of one operand/epilogue choice (the PTX tests compile those launched).</summary>
    internal static IEnumerable<Type> Kernels<TA, TB, TE>()
        where TA : struct, IGemmOperand where TB : struct, IGemmOperand where TE : struct, IGemmEpilogue =>
        [typeof(TiledGemm<TA, TB, TE>), typeof(BlockedGemm<TA, TB, TE>)];
}

/// <summary>
/// Tiled GEMM (GPUs), explicitly grouped: group (x, y, z) computes the 64×64 tile of C at rows 64y..,
/// columns 64x.. of product z. Thread (tx, ty) of the 8×8 group owns rows 64y + ty + 8r and columns
/// 64x + tx + 8c (r, c &lt; 8), so shared reads are broadcasts or consecutive and stores coalesce along tx.
/// Per 16-deep slice the group stages op(A) 64×16 and op(B) 16×64 k-major in shared memory (zero outside
/// the matrices), then each thread does 16 k steps of 8 + 8 shared loads for 64 multiply-adds (4 per
/// load), hand-unrolled 4 deep. The sum over k ascends, as in <see cref="BlockedGemm{TA, TB, TE}"/>.
/// </summary>
internal readonly struct TiledGemm<TA, TB, TE>(TA a, TB b, TE e, GemmSize s) : IGroupKernel
    where TA : struct, IGemmOperand where TB : struct, IGemmOperand where TE : struct, IGemmEpilogue
{
    /// <summary>Shared-memory row stride: 64 + 1 padding so that stores in either order avoid bank conflicts.</summary>
    private const int TileStride = GemmCore.Tile + 1;
    private const int Tile = GemmCore.Tile, TileK = GemmCore.TileK, GroupSide = GemmCore.GroupSide;

    /// <summary>Shared floats of each staged operand slice (64 × 16, rows padded to 65).</summary>
    internal const int TileFloats = TileK * TileStride;

    /// <inheritdoc/>
    public void Execute()
    {
        var tileA = SharedMemory.Allocate<float>(TileFloats); // tileA[kk·65 + ii] = opA[i0 + ii, k0 + kk]
        var tileB = SharedMemory.Allocate<float>(TileFloats); // tileB[kk·65 + jj] = opB[k0 + kk, j0 + jj]
        Run(Grid.IdxX, Grid.IdxY, Grid.IdxZ, tileA, tileB);
    }

    /// <summary>The tile at column block <paramref name="bx"/>, row block <paramref name="by"/> of product <paramref name="batch"/> (every thread of the group calls it).</summary>
    internal void Run(int bx, int by, int batch, ArrayView<float> tileA, ArrayView<float> tileB)
    {
        int tx = Group.IdxX, ty = Group.IdxY, tid = ty * GroupSide + tx;
        int i0 = by * Tile, j0 = bx * Tile;
        bool aAlongK = a.ContiguousInK, bAlongK = b.ContiguousInK;
        Block8x8 sums = default;
        for (int k0 = 0; k0 < s.K; k0 += TileK)
        {
            // Stage 1024 elements of each operand, 16 per thread, consecutive threads on consecutive addresses.
            for (int q = 0; q < Tile * TileK / (GroupSide * GroupSide); q++)
            {
                int e = tid + q * GroupSide * GroupSide;
                int ii = aAlongK ? e / TileK : e & (Tile - 1), ka = aAlongK ? e & (TileK - 1) : e / Tile;
                tileA[ka * TileStride + ii] = i0 + ii < s.M && k0 + ka < s.K ? a.Load(batch, i0 + ii, k0 + ka) : 0f;
                int jj = bAlongK ? e / TileK : e & (Tile - 1), kb = bAlongK ? e & (TileK - 1) : e / Tile;
                tileB[kb * TileStride + jj] = j0 + jj < s.N && k0 + kb < s.K ? b.Load(batch, k0 + kb, j0 + jj) : 0f;
            }
            Group.Barrier();
            for (int t = 0; t < TileK * TileStride; t += 4 * TileStride)
            {
                Step(tileA, tileB, t + ty, t + tx, ref sums);
                Step(tileA, tileB, t + TileStride + ty, t + TileStride + tx, ref sums);
                Step(tileA, tileB, t + 2 * TileStride + ty, t + 2 * TileStride + tx, ref sums);
                Step(tileA, tileB, t + 3 * TileStride + ty, t + 3 * TileStride + tx, ref sums);
            }
            Group.Barrier();
        }
        sums.Store(e, s, batch, i0 + ty, j0 + tx, GroupSide);
        e.FinishTile(i0, j0, tx, ty, tileA); // the tiles are free: every thread is past the last barrier of the loop
    }

    /// <summary>One k step of a thread's 8×8 block: rows at ta + 8r of tileA, columns at tb + 8c of tileB.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step(ArrayView<float> tileA, ArrayView<float> tileB, int ta, int tb, ref Block8x8 sums) =>
        sums.Add(tileA[ta], tileA[ta + 8], tileA[ta + 16], tileA[ta + 24], tileA[ta + 32], tileA[ta + 40], tileA[ta + 48], tileA[ta + 56],
                 tileB[tb], tileB[tb + 8], tileB[tb + 16], tileB[tb + 24], tileB[tb + 32], tileB[tb + 40], tileB[tb + 48], tileB[tb + 56]);
}

/// <summary>
/// Two <see cref="TiledGemm{TA, TB, TE}"/> products in one grid (<see cref="GemmCore.RunPair"/>): grid z below
/// <c>firstBatches</c> is the first's product z, the rest the second's; a group whose (x, y) lies outside its product's
/// tiles returns at once (the whole group: no barrier is left waiting). The shared tiles are allocated once.
/// </summary>
internal readonly struct TiledGemmPair<TA1, TB1, TE1, TA2, TB2, TE2>(TiledGemm<TA1, TB1, TE1> first, TiledGemm<TA2, TB2, TE2> second,
                                                                      int firstBatches, int firstX, int firstY, int secondX, int secondY) : IGroupKernel
    where TA1 : struct, IGemmOperand where TB1 : struct, IGemmOperand where TE1 : struct, IGemmEpilogue
    where TA2 : struct, IGemmOperand where TB2 : struct, IGemmOperand where TE2 : struct, IGemmEpilogue
{
    /// <inheritdoc/>
    public void Execute()
    {
        var tileA = SharedMemory.Allocate<float>(TiledGemm<TA1, TB1, TE1>.TileFloats);
        var tileB = SharedMemory.Allocate<float>(TiledGemm<TA1, TB1, TE1>.TileFloats);
        int bx = Grid.IdxX, by = Grid.IdxY, z = Grid.IdxZ;
        if (z < firstBatches)
        {
            if (bx < firstX && by < firstY) first.Run(bx, by, z, tileA, tileB);
        }
        else if (bx < secondX && by < secondY) second.Run(bx, by, z - firstBatches, tileA, tileB);
    }
}
