using IlgpuDdpm.Kernels.Attention;

namespace IlgpuDdpm.Autodiff;

/// <summary>Softmax and single-head self-attention on the tape (DESIGN.md §4).</summary>
public static class AttentionOps
{
    /// <summary>
    /// Softmax over the last dimension: every row <c>x[..., :]</c> becomes <c>exp(x − max)/Σ exp(x − max)</c>.
    /// Any rank ≥ 1. Backward: dx += y ⊙ (dy − Σ_j dy_j·y_j) per row.
    /// </summary>
    public static Tensor Softmax(this Tape tape, Tensor x)
    {
        int cols = x.Dim(-1), rows = x.Length / cols;
        var y = tape.NewTensor(x.Shape);
        var kernels = tape.Device.Kernels<AttentionKernels>();
        kernels.SoftmaxForward(x.View, y.View, rows, cols);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => kernels.SoftmaxBackward(y.View, dy.View, tape.GradOf(x).View, rows, cols));
        return y;
    }

    /// <summary>
    /// Single-head scaled dot-product self-attention over positions: q, k, v [N, C, L] (L = H·W; [N, C, H, W]
    /// is accepted and flattened) → o of q's shape,
    /// <c>o[n,:,i] = Σ_j softmax_j(Σ_c q[n,c,i]·k[n,c,j] / √C) · v[n,:,j]</c>.
    /// Composed of taped ops — scores = qᵀk/√C (<see cref="MatmulOps.BatchedMatmul"/>), w = softmax over keys,
    /// o = v·wᵀ — so its backward is theirs. Keeps the [N, L, L] scores and weights until the tape is cleared.
    /// </summary>
    public static Tensor Attention(this Tape tape, Tensor q, Tensor k, Tensor v)
    {
        if (q.Rank < 3 || !q.SameShape(k) || !q.SameShape(v))
            throw new ArgumentException(
                $"attention: q, k, v must share one shape [N, C, L] (or [N, C, H, W]), got {Tensor.ShapeText(q.Shape)}, {Tensor.ShapeText(k.Shape)}, {Tensor.ShapeText(v.Shape)}");
        int n = q.Dim(0), c = q.Dim(1), l = q.Length / (n * c);
        Tensor Flat(Tensor t) => t.Rank == 3 ? t : tape.Reshape(t, n, c, l);

        // scores [N, L, L]: s[n,i,j] = Σ_c q[n,c,i]·k[n,c,j] / √C   (qᵀ·k per image)
        var scores = tape.BatchedMatmul(Flat(q), Flat(k), transposeA: true, alpha: 1f / MathF.Sqrt(c));
        // w [N, L, L]: softmax over the keys j
        var w = tape.Softmax(scores);
        // o [N, C, L]: o[n,c,i] = Σ_j v[n,c,j]·w[n,i,j]   (v·wᵀ per image)
        var o = tape.BatchedMatmul(Flat(v), w, transposeB: true);
        return q.Rank == 3 ? o : tape.Reshape(o, q.Shape);
    }
}
