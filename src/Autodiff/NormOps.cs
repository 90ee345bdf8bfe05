using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Norm;

namespace IlgpuDdpm.Autodiff;

/// <summary>Normalisation ops (see <see cref="NormKernels"/>).</summary>
public static class NormOps
{
    /// <summary>
    /// Group normalisation: x [N, C, …] (rank ≥ 2; the dimensions after C are flattened into S),
    /// gamma and beta [C], C divisible by <paramref name="groups"/>. Per (n, g): the biased mean and
    /// variance over its C/G·S values; y = (x − μ)/√(σ² + eps)·γ[c] + β[c], same shape as x.
    /// Gradients flow to x, gamma and beta (whichever require one).
    /// </summary>
    public static Tensor GroupNorm(this Tape tape, Tensor x, Tensor gamma, Tensor beta, int groups, float eps = 1e-5f) =>
        tape.GroupNorm(x, gamma, beta, groups, new IdentityOp(), eps);

    /// <summary>
    /// y = activation(GroupNorm(x)): <see cref="GroupNorm(Tape, Tensor, Tensor, Tensor, int, float)"/> and then
    /// <paramref name="activation"/> (SiLU in the U-Net), fused into the norm's launches forward and backward. The same
    /// bits as the two ops one after the other, two launches and one stored tensor fewer.
    /// </summary>
    public static Tensor GroupNorm<TOp>(this Tape tape, Tensor x, Tensor gamma, Tensor beta, int groups, TOp activation, float eps = 1e-5f)
        where TOp : struct, IUnaryOp
    {
        if (x.Rank < 2) throw new ArgumentException($"group norm: x must be [N, C, …] (rank ≥ 2), got {Tensor.ShapeText(x.Shape)}");
        int n = x.Shape[0], c = x.Shape[1];
        int spatial = x.Length / (n * c);
        if (gamma.Length != c || gamma.Rank != 1) throw new ArgumentException($"group norm: gamma must be [{c}] for x {Tensor.ShapeText(x.Shape)}, got {Tensor.ShapeText(gamma.Shape)}");
        if (beta.Length != c || beta.Rank != 1) throw new ArgumentException($"group norm: beta must be [{c}] for x {Tensor.ShapeText(x.Shape)}, got {Tensor.ShapeText(beta.Shape)}");
        if (groups <= 0 || c % groups != 0) throw new ArgumentException($"group norm: {c} channels cannot be split into {groups} groups");
        var dims = new GroupNormDims(n, c, groups, spatial);

        var k = tape.Device.Kernels<NormKernels>();
        var y = tape.NewTensor(x.Shape);
        var mean = tape.NewTensor(n, groups);
        var rstd = tape.NewTensor(n, groups);
        k.Forward(activation, x.View, gamma.View, beta.View, y.View, mean.View, rstd.View, dims, eps);

        if (tape.NeedsGrad(x, gamma, beta))
            tape.Record(y, dy => k.Backward(activation, x.View, gamma.View, beta.View, mean.View, rstd.View, dy.View,
                x.RequiresGrad ? tape.GradOf(x).View : default,
                gamma.RequiresGrad ? tape.GradOf(gamma).View : default,
                beta.RequiresGrad ? tape.GradOf(beta).View : default,
                dims));
        return y;
    }
}
