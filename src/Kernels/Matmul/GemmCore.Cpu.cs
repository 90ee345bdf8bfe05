using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Matmul;

internal static partial class GemmCore
{
    /// <summary>Rows and columns of C one thread computes in the register-blocked (CPU) kernel.</summary>
    internal const int Block = 16;
}

/// <summary>
/// Register-blocked, barrier-free GEMM (ILGPU's CPU accelerator): one thread per 16×16 block of C, as four
/// 8×8 blocks. Per k the thread loads 16 values of op(A) and 16 of op(B) and does 256 multiply-adds: on the
/// CPU accelerator every view access pays range and buffer checks, so the cost is loads per multiply-add
/// ((16 + 16)/256 here; a 4×4 block measured ~5× slower at 256³). Rows and columns past the edge are
/// clamped for loading (no branches in the k loop) and not stored. k ascends, as in <see cref="TiledGemm{TA, TB, TE}"/>.
/// </summary>
internal readonly struct BlockedGemm<TA, TB, TE>(TA a, TB b, TE e, GemmSize s) : IThreadKernel
    where TA : struct, IGemmOperand where TB : struct, IGemmOperand where TE : struct, IGemmEpilogue
{
    private const int Block = GemmCore.Block;

    /// <inheritdoc/>
    public void Execute(int index)
    {
        int perMatrix = (s.M + Block - 1) / Block * s.BlocksN;
        int batch = index / perMatrix, blockIndex = index - batch * perMatrix;
        int i0 = blockIndex / s.BlocksN * Block, j0 = blockIndex % s.BlocksN * Block;
        int lastRow = s.M - 1, lastCol = s.N - 1;
        int r1 = Math.Min(i0 + 1, lastRow), r2 = Math.Min(i0 + 2, lastRow), r3 = Math.Min(i0 + 3, lastRow);
        int r4 = Math.Min(i0 + 4, lastRow), r5 = Math.Min(i0 + 5, lastRow), r6 = Math.Min(i0 + 6, lastRow);
        int r7 = Math.Min(i0 + 7, lastRow), r8 = Math.Min(i0 + 8, lastRow), r9 = Math.Min(i0 + 9, lastRow);
        int r10 = Math.Min(i0 + 10, lastRow), r11 = Math.Min(i0 + 11, lastRow), r12 = Math.Min(i0 + 12, lastRow);
        int r13 = Math.Min(i0 + 13, lastRow), r14 = Math.Min(i0 + 14, lastRow), r15 = Math.Min(i0 + 15, lastRow);
        int q1 = Math.Min(j0 + 1, lastCol), q2 = Math.Min(j0 + 2, lastCol), q3 = Math.Min(j0 + 3, lastCol);
        int q4 = Math.Min(j0 + 4, lastCol), q5 = Math.Min(j0 + 5, lastCol), q6 = Math.Min(j0 + 6, lastCol);
        int q7 = Math.Min(j0 + 7, lastCol), q8 = Math.Min(j0 + 8, lastCol), q9 = Math.Min(j0 + 9, lastCol);
        int q10 = Math.Min(j0 + 10, lastCol), q11 = Math.Min(j0 + 11, lastCol), q12 = Math.Min(j0 + 12, lastCol);
        int q13 = Math.Min(j0 + 13, lastCol), q14 = Math.Min(j0 + 14, lastCol), q15 = Math.Min(j0 + 15, lastCol);

        // Locals: a method call on a readonly field of an unconstrained struct type copies the whole operand first.
        TA opA = a;
        TB opB = b;
        Block8x8 top = default, topRight = default, bottom = default, bottomRight = default;
        for (int k = 0; k < s.K; k++)
        {
            float a0 = opA.Load(batch, i0, k), a1 = opA.Load(batch, r1, k), a2 = opA.Load(batch, r2, k), a3 = opA.Load(batch, r3, k);
            float a4 = opA.Load(batch, r4, k), a5 = opA.Load(batch, r5, k), a6 = opA.Load(batch, r6, k), a7 = opA.Load(batch, r7, k);
            float a8 = opA.Load(batch, r8, k), a9 = opA.Load(batch, r9, k), a10 = opA.Load(batch, r10, k), a11 = opA.Load(batch, r11, k);
            float a12 = opA.Load(batch, r12, k), a13 = opA.Load(batch, r13, k), a14 = opA.Load(batch, r14, k), a15 = opA.Load(batch, r15, k);
            float b0 = opB.Load(batch, k, j0), b1 = opB.Load(batch, k, q1), b2 = opB.Load(batch, k, q2), b3 = opB.Load(batch, k, q3);
            float b4 = opB.Load(batch, k, q4), b5 = opB.Load(batch, k, q5), b6 = opB.Load(batch, k, q6), b7 = opB.Load(batch, k, q7);
            float b8 = opB.Load(batch, k, q8), b9 = opB.Load(batch, k, q9), b10 = opB.Load(batch, k, q10), b11 = opB.Load(batch, k, q11);
            float b12 = opB.Load(batch, k, q12), b13 = opB.Load(batch, k, q13), b14 = opB.Load(batch, k, q14), b15 = opB.Load(batch, k, q15);
            top.Add(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7);
            topRight.Add(a0, a1, a2, a3, a4, a5, a6, a7, b8, b9, b10, b11, b12, b13, b14, b15);
            bottom.Add(a8, a9, a10, a11, a12, a13, a14, a15, b0, b1, b2, b3, b4, b5, b6, b7);
            bottomRight.Add(a8, a9, a10, a11, a12, a13, a14, a15, b8, b9, b10, b11, b12, b13, b14, b15);
        }
        top.Store(e, s, batch, i0, j0, 1);
        topRight.Store(e, s, batch, i0, j0 + 8, 1);
        bottom.Store(e, s, batch, i0 + 8, j0, 1);
        bottomRight.Store(e, s, batch, i0 + 8, j0 + 8, 1);
    }
}
