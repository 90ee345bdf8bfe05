using System.Runtime.CompilerServices;

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
