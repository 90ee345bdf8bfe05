using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Norm;
using IlgpuDdpm.Kernels.Random;

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
        where TOp : struct, IUnaryOp => tape.GroupNorm(x, gamma, beta, groups, activation, new NoMask(), eps);

    /// <summary>
    /// y = Dropout(activation(GroupNorm(x)), <paramref name="dropout"/>, <paramref name="dropoutKey"/>): the ResBlock's
    /// second norm (DESIGN.md §4), the same function and bits as <see cref="ElementwiseOps.Dropout"/> after the fused
    /// norm. On a GPU (<see cref="Kernels.Device.ComputeDevice.UsesGpuVariants"/>) the mask is fused into the norm's
    /// launches too, regenerated where an element is read (one Philox block per read, three reads in the backward),
    /// which saves two launches and a stored tensor per ResBlock. The CPU accelerator's scalar code has no arithmetic to
    /// spare for that, so there the separate dropout kernel (one block per four elements) stays.
    /// </summary>
    public static Tensor GroupNorm<TOp>(this Tape tape, Tensor x, Tensor gamma, Tensor beta, int groups, TOp activation, float eps, float dropout, PhiloxKey dropoutKey)
        where TOp : struct, IUnaryOp
    {
        if (!(dropout >= 0f && dropout < 1f))
            throw new ArgumentOutOfRangeException(nameof(dropout), $"dropout probability must be in [0, 1), got {dropout}");
        if (!tape.Training || dropout == 0f) return tape.GroupNorm(x, gamma, beta, groups, activation, eps);
        if (!tape.Device.UsesGpuVariants) return tape.Dropout(tape.GroupNorm(x, gamma, beta, groups, activation, eps), dropout, dropoutKey);
        return tape.GroupNorm(x, gamma, beta, groups, activation, new DropoutMask(dropoutKey, dropout), eps);
    }

    private static Tensor GroupNorm<TOp, TMask>(this Tape tape, Tensor x, Tensor gamma, Tensor beta, int groups, TOp activation, TMask mask, float eps)
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
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
        k.Forward(activation, mask, x.View, gamma.View, beta.View, y.View, mean.View, rstd.View, dims, eps);

        if (tape.NeedsGrad(x, gamma, beta))
            tape.Record(y, dy => k.Backward(activation, mask, x.View, gamma.View, beta.View, mean.View, rstd.View, dy.View,
                x.RequiresGrad ? tape.GradOf(x).View : default,
                gamma.RequiresGrad ? tape.GradOf(gamma).View : default,
                beta.RequiresGrad ? tape.GradOf(beta).View : default,
                dims));
        return y;
    }
}
