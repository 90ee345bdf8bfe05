using IlgpuDdpm.Autodiff;

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
public sealed class SelfAttention
{
    /// <summary>Creates the layer's parameters from <paramref name="source"/>.</summary>
    public SelfAttention(ParameterSource source, string name, int channels, int groups)
    {
        Name = name;
        Channels = channels;
        Norm = new GroupNorm(source, $"{name}.norm", channels, groups);
        Q = new Conv2d(source, $"{name}.q", channels, channels, 1);
        K = new Conv2d(source, $"{name}.k", channels, channels, 1);
        V = new Conv2d(source, $"{name}.v", channels, channels, 1);
        ProjOut = new Conv2d(source, $"{name}.proj_out", channels, channels, 1, nearZero: true);
    }

    /// <summary>Every parameter spec, in creation order.</summary>
    public static ParameterSpec[] Specs(string name, int channels) =>
    [
        .. GroupNorm.Specs($"{name}.norm", channels),
        .. Conv2d.Specs($"{name}.q", channels, channels, 1),
        .. Conv2d.Specs($"{name}.k", channels, channels, 1),
        .. Conv2d.Specs($"{name}.v", channels, channels, 1),
        .. Conv2d.Specs($"{name}.proj_out", channels, channels, 1, nearZero: true),
    ];

    /// <summary>Multiply-adds ×2 per image: four 1×1 convs (2·C²·L each) and the two matmuls qᵀk and v·wᵀ (2·C·L² each), L = H·W.</summary>
    public static double Flops(int channels, int h, int w)
    {
        double l = (double)h * w;
        return 4 * Conv2d.Flops(channels, channels, 1, h, w) + 2 * (2.0 * channels * l * l);
    }

    /// <summary>The dotted prefix.</summary>
    public string Name { get; }

    /// <summary>C.</summary>
    public int Channels { get; }

    /// <summary>GroupNorm of the input.</summary>
    public GroupNorm Norm { get; }

    /// <summary>Query projection.</summary>
    public Conv2d Q { get; }

    /// <summary>Key projection.</summary>
    public Conv2d K { get; }

    /// <summary>Value projection.</summary>
    public Conv2d V { get; }

    /// <summary>Output projection, initialised near zero.</summary>
    public Conv2d ProjOut { get; }

    /// <summary>x [N,C,H,W] → x + attention(x), same shape.</summary>
    public Tensor Forward(Tape tape, Tensor x)
    {
        int n = x.Dim(0), c = x.Dim(1), height = x.Dim(2), width = x.Dim(3), l = height * width;
        var h = Norm.Forward(tape, x);
        var q = tape.Reshape(Q.Forward(tape, h), n, c, l);
        var k = tape.Reshape(K.Forward(tape, h), n, c, l);
        var v = tape.Reshape(V.Forward(tape, h), n, c, l);
        var a = tape.Reshape(tape.Attention(q, k, v), n, c, height, width);
        return tape.Add(x, ProjOut.Forward(tape, a));
    }
}
