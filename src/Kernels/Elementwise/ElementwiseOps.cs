using System.Runtime.CompilerServices;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Kernels.Elementwise;

/// <summary>
/// An element-wise function and its derivative, as a <c>struct</c> so that
/// <see cref="ElementwiseKernels.Unary{TOp}"/> compiles one specialised kernel per operator (ILGPU's
/// GenericKernel pattern). A new activation is one such struct (and its tests).
/// </summary>
public interface IUnaryOp
{
    /// <summary>y = f(x).</summary>
    float Forward(float x);

    /// <summary>dy·f′(x): the gradient that flows back to x (written as one expression so each op keeps its rounding).</summary>
    float Backward(float x, float dy);
}

/// <summary>
/// A per-element factor that a fused kernel applies to element i of its output, and to the gradient that comes back
/// through it: <see cref="NoMask"/>, or dropout's (<see cref="DropoutMask"/>), fused into group norm on a GPU.
/// </summary>
public interface IElementMask
{
    /// <summary>v times element <paramref name="i"/>'s factor.</summary>
    float Apply(int i, float v);
}

/// <summary>No mask: v.</summary>
public readonly struct NoMask : IElementMask
{
    /// <inheritdoc/>
    public float Apply(int i, float v) => v;
}

/// <summary>
/// Inverted dropout's mask as a function of the element index: element i is kept iff
/// u_i = Philox.Uniform(seed, stream, offset + i) ≥ p, and then scaled by 1/(1 − p); else 0. A pure function of
/// (key, i), so the backward regenerates it and nothing is stored.
/// </summary>
public readonly struct DropoutMask : IElementMask
{
    private readonly PhiloxKey key;
    private readonly float p, scale;

    /// <summary>The mask of the draw <paramref name="key"/> with probability <paramref name="p"/> in [0, 1).</summary>
    public DropoutMask(PhiloxKey key, float p)
    {
        if (!(p >= 0f && p < 1f)) throw new ArgumentOutOfRangeException(nameof(p), $"dropout probability must be in [0, 1), got {p}");
        (this.key, this.p, scale) = (key, p, 1f / (1f - p));
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Apply(int i, float v) => Keep(Philox.Uniform(key.Seed, key.Stream, key.Offset + (ulong)i), v);

    /// <summary>v/(1 − p) when the element's number <paramref name="u"/> ≥ p, else 0: the one rule of every dropout kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Keep(float u, float v) => u >= p ? v * scale : 0f;
}

/// <summary>A function of two floats, for the element-wise and broadcast kernels.</summary>
public interface IBinaryOp
{
    /// <summary>f(a, b).</summary>
    float Apply(float a, float b);
}

/// <summary>SiLU (swish): y = x·σ(x), σ(x) = 1/(1 + e^−x); dy/dx = σ(x)·(1 + x·(1 − σ(x))).</summary>
public readonly struct SiluOp : IUnaryOp
{
    /// <inheritdoc/>
    public float Forward(float x) => x / (1f + MathF.Exp(-x));

    /// <inheritdoc/>
    public float Backward(float x, float dy)
    {
        float s = 1f / (1f + MathF.Exp(-x));
        return dy * s * (1f + x * (1f - s));
    }
}

/// <summary>
/// GELU, tanh approximation (PyTorch <c>approximate='tanh'</c>): y = ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³).
/// Written with ½(1 + tanh(u)) = σ(2u) (no tanh intrinsic needed in PTX):
/// y = x·σ(2u), dy/dx = σ(2u) + x·σ(2u)(1 − σ(2u))·2u′, u′ = √(2/π)(1 + 3·0.044715x²).
/// </summary>
public readonly struct GeluOp : IUnaryOp
{
    private const float SqrtTwoOverPi = 0.7978845608028654f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Gate(float x) => 1f / (1f + MathF.Exp(-2f * SqrtTwoOverPi * (x + 0.044715f * x * x * x)));

    /// <inheritdoc/>
    public float Forward(float x) => x * Gate(x);

    /// <inheritdoc/>
    public float Backward(float x, float dy)
    {
        float s = Gate(x);
        float du = 2f * SqrtTwoOverPi * (1f + 3f * 0.044715f * x * x);
        return dy * (s + x * s * (1f - s) * du);
    }
}

/// <summary>y = x (copy).</summary>
public readonly struct IdentityOp : IUnaryOp
{
    /// <inheritdoc/>
    public float Forward(float x) => x;

    /// <inheritdoc/>
    public float Backward(float x, float dy) => dy;
}

/// <summary>y = s·x.</summary>
public readonly struct ScaleOp(float s) : IUnaryOp
{
    /// <inheritdoc/>
    public float Forward(float x) => s * x;

    /// <inheritdoc/>
    public float Backward(float x, float dy) => s * dy;
}

/// <summary>a + b.</summary>
public readonly struct AddOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a + b;
}

/// <summary>a + s·b (the accumulate of a scaled gradient).</summary>
public readonly struct AddScaledOp(float s) : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a + s * b;
}

/// <summary>wa·a + wb·b (e.g. the posterior mean coef_x0·x_0 + coef_xt·x_t).</summary>
public readonly struct WeightedSumOp(float wa, float wb) : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => wa * a + wb * b;
}
