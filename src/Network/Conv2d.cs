namespace IlgpuDdpm.Network;

/// <summary>
/// 2-D convolution, PyTorch layout: <c>{name}.weight</c> [Cout, Cin, K, K], <c>{name}.bias</c> [Cout];
/// padding K/2. x [N,Cin,H,W] → y [N,Cout,Ho,Wo], Ho = (H + 2·(K/2) − K)/stride + 1.
/// Weight: Xavier over fan_in = Cin·K·K, fan_out = Cout·K·K; bias zero.
/// </summary>
public sealed class Conv2d(string name, int inChannels, int outChannels, int kernel, int stride = 1, bool nearZero = false)
{
    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name { get; } = name;

    /// <summary>[Cout, Cin, K, K].</summary>
    public ParameterSpec Weight { get; } = new($"{name}.weight", [outChannels, inChannels, kernel, kernel],
        ParameterInit.Xavier(inChannels * kernel * kernel, outChannels * kernel * kernel, nearZero));

    /// <summary>[Cout].</summary>
    public ParameterSpec Bias { get; } = new($"{name}.bias", [outChannels], ParameterInit.Zeros);

    /// <summary>Cin.</summary>
    public int InChannels { get; } = inChannels;

    /// <summary>Cout.</summary>
    public int OutChannels { get; } = outChannels;

    /// <summary>K.</summary>
    public int Kernel { get; } = kernel;

    /// <summary>1 or 2.</summary>
    public int Stride { get; } = stride;

    /// <summary>K/2.</summary>
    public int Padding => Kernel / 2;

    /// <summary>x [N,Cin,H,W] → [N,Cout,Ho,Wo].</summary>
    public T Forward<T>(IForwardOps<T> ops, T x) => ops.Conv2d(this, x);

    /// <summary>conv(x) + what <paramref name="addend"/> computes ([N,Cout,Ho,Wo], or [N,Cout] broadcast over Ho, Wo) as one fused op.</summary>
    public T Forward<T>(IForwardOps<T> ops, T x, Func<T> addend) => ops.Conv2dAdd(this, x, addend);
}
