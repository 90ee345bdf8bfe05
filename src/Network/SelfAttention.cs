namespace IlgpuDdpm.Network;

/// <summary>
/// Single-head self-attention over the H·W positions (DESIGN.md §4):
/// <code>
/// h = norm(x);  q, k, v = q(h), k(h), v(h)            each Conv1x1 C→C
/// w = softmax_j(q_iᵀ k_j / √C);  a[:, i] = Σ_j w_ij v[:, j]
/// return x + proj_out(a)                              proj_out: Conv1x1 C→C, starts near zero
/// </code>
/// Parameters under <c>{name}.</c>: norm, q, k, v, proj_out (each .weight, .bias).
/// </summary>
public sealed class SelfAttention(string name, int channels, int groups) : UNetLayer(name, LayerKind.Attention, channels, channels)
{
    /// <summary>GroupNorm of the input.</summary>
    public GroupNorm Norm { get; } = new($"{name}.norm", channels, groups);

    /// <summary>Query projection.</summary>
    public Conv2d Q { get; } = new($"{name}.q", channels, channels, 1);

    /// <summary>Key projection.</summary>
    public Conv2d K { get; } = new($"{name}.k", channels, channels, 1);

    /// <summary>Value projection.</summary>
    public Conv2d V { get; } = new($"{name}.v", channels, channels, 1);

    /// <summary>Output projection, initialised near zero.</summary>
    public Conv2d ProjOut { get; } = new($"{name}.proj_out", channels, channels, 1, nearZero: true);

    /// <summary>x [N,C,H,W] → x + attention(x), same shape.</summary>
    public override T Forward<T>(IForwardOps<T> ops, T x, T embedding)
    {
        var h = Norm.Forward(ops, x);
        var a = ops.Attention(Q.Forward(ops, h), K.Forward(ops, h), V.Forward(ops, h));
        return ProjOut.Forward(ops, a, () => x); // x + proj_out(a), the residual added in the projection's epilogue
    }

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) =>
        $"SelfAttention {OutChannels} over {outputShape[1] * outputShape[2]}";
}
