using IlgpuDdpm.Kernels.Matmul;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// Matrix products on the tape: <see cref="Linear"/> (a fully connected layer, PyTorch layout) and
/// <see cref="BatchedMatmul"/>. Both run <see cref="MatmulKernels"/> GEMMs forward and backward; the
/// backward GEMMs accumulate into the gradients.
/// </summary>
public static class MatmulOps
{
    /// <summary>
    /// <c>y = x·Wᵀ + b</c>: x [N, In] (or any [..., In]: leading dimensions are rows), weight [Out, In],
    /// bias [Out] or null → y [N, Out] ([..., Out]).
    /// Backward: dx += dy·W, dW += dyᵀ·x, db += Σ_rows dy.
    /// </summary>
    public static Tensor Linear(this Tape tape, Tensor x, Tensor weight, Tensor? bias)
    {
        if (weight.Rank != 2)
            throw new ArgumentException($"linear: weight must be [out, in], got {Tensor.ShapeText(weight.Shape)}");
        int outFeatures = weight.Dim(0), inFeatures = weight.Dim(1);
        if (x.Dim(-1) != inFeatures)
            throw new ArgumentException($"linear: x must be [..., {inFeatures}] to match weight {Tensor.ShapeText(weight.Shape)}, got {Tensor.ShapeText(x.Shape)}");
        if (bias is not null && (bias.Rank != 1 || bias.Length != outFeatures))
            throw new ArgumentException($"linear: bias must be [{outFeatures}], got {Tensor.ShapeText(bias.Shape)}");

        int rows = x.Length / inFeatures;
        var shape = (int[])x.Shape.Clone();
        shape[^1] = outFeatures;
        var y = tape.NewTensor(shape);
        var kernels = tape.Device.Kernels<MatmulKernels>();
        // y [rows, Out] = x [rows, In] · (W [Out, In])ᵀ
        var forward = new GemmDims(1, rows, outFeatures, inFeatures, TransposeB: true);
        if (bias is null) kernels.Gemm(x.View, weight.View, y.View, forward);
        else kernels.GemmBias(x.View, weight.View, bias.View, y.View, forward);

        if (tape.NeedsGrad(x, weight, bias))
            tape.Record(y, dy =>
            {
                // dx [rows, In] += dy [rows, Out] · W [Out, In];  dW [Out, In] += (dy [rows, Out])ᵀ · x [rows, In];  db [Out] += Σ_rows dy
                // (on a GPU one launch for all three: dx's product and [dW | db] += dyᵀ·[x | 1], paired)
                kernels.LinearBackward(dy.View, x.View, weight.View, x.RequiresGrad ? tape.GradOf(x).View : default,
                                       weight.RequiresGrad ? tape.GradOf(weight).View : default, bias is { RequiresGrad: true } ? tape.GradOf(bias).View : default,
                                       rows, outFeatures, inFeatures);
            });
        return y;
    }

    /// <summary>
    /// <c>c = alpha·op(a)·op(b)</c> per batch: a [B, M, K] ([B, K, M] when <paramref name="transposeA"/>),
    /// b [B, K, P] ([B, P, K] when <paramref name="transposeB"/>) → c [B, M, P].
    /// Backward: d op(a) = alpha·dc·op(b)ᵀ, d op(b) = alpha·op(a)ᵀ·dc, each transposed back to the stored layout.
    /// </summary>
    public static Tensor BatchedMatmul(this Tape tape, Tensor a, Tensor b, bool transposeA = false, bool transposeB = false, float alpha = 1f)
    {
        if (a.Rank != 3 || b.Rank != 3)
            throw new ArgumentException($"batched matmul: a and b must be rank 3 [batch, rows, cols], got {Tensor.ShapeText(a.Shape)} and {Tensor.ShapeText(b.Shape)}");
        int batch = a.Dim(0);
        int m = transposeA ? a.Dim(2) : a.Dim(1);
        int k = transposeA ? a.Dim(1) : a.Dim(2);
        int kb = transposeB ? b.Dim(2) : b.Dim(1);
        int n = transposeB ? b.Dim(1) : b.Dim(2);
        if (b.Dim(0) != batch || kb != k)
            throw new ArgumentException(
                $"batched matmul: op(a) is [{batch}, {m}, {k}] so op(b) must be [{batch}, {k}, P], got a {Tensor.ShapeText(a.Shape)}{(transposeA ? "ᵀ" : "")} and b {Tensor.ShapeText(b.Shape)}{(transposeB ? "ᵀ" : "")}");

        var c = tape.NewTensor(batch, m, n);
        var kernels = tape.Device.Kernels<MatmulKernels>();
        kernels.Gemm(a.View, b.View, c.View, new GemmDims(batch, m, n, k, transposeA, transposeB), alpha);

        if (tape.NeedsGrad(a, b))
            tape.Record(c, dc =>
            {
                if (a.RequiresGrad)
                {
                    var da = tape.GradOf(a).View;
                    if (!transposeA) // da [M, K] += alpha · dc [M, N] · op(b)ᵀ [N, K]
                        kernels.Gemm(dc.View, b.View, da, new GemmDims(batch, m, k, n, false, !transposeB), alpha, accumulate: true);
                    else             // da [K, M] += alpha · op(b) [K, N] · dcᵀ [N, M]
                        kernels.Gemm(b.View, dc.View, da, new GemmDims(batch, k, m, n, transposeB, true), alpha, accumulate: true);
                }
                if (b.RequiresGrad)
                {
                    var db = tape.GradOf(b).View;
                    if (!transposeB) // db [K, N] += alpha · op(a)ᵀ [K, M] · dc [M, N]
                        kernels.Gemm(a.View, dc.View, db, new GemmDims(batch, k, n, m, !transposeA, false), alpha, accumulate: true);
                    else             // db [N, K] += alpha · dcᵀ [N, M] · op(a) [M, K]
                        kernels.Gemm(dc.View, a.View, db, new GemmDims(batch, n, k, m, true, transposeA), alpha, accumulate: true);
                }
            });
        return c;
    }
}
