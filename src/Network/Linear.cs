namespace IlgpuDdpm.Network;

/// <summary>
/// Fully connected layer, PyTorch layout: <c>{name}.weight</c> [Out, In], <c>{name}.bias</c> [Out].
/// x [N,In] → y [N,Out] = x·Wᵀ + b. Weight: Xavier over fan_in = In, fan_out = Out; bias zero.
/// </summary>
public sealed class Linear(string name, int inFeatures, int outFeatures, bool nearZero = false)
{
    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name { get; } = name;

    /// <summary>[Out, In].</summary>
    public ParameterSpec Weight { get; } = new($"{name}.weight", [outFeatures, inFeatures], ParameterInit.Xavier(inFeatures, outFeatures, nearZero));

    /// <summary>[Out].</summary>
    public ParameterSpec Bias { get; } = new($"{name}.bias", [outFeatures], ParameterInit.Zeros);

    /// <summary>In.</summary>
    public int InFeatures { get; } = inFeatures;

    /// <summary>Out.</summary>
    public int OutFeatures { get; } = outFeatures;

    /// <summary>x [N,In] → [N,Out].</summary>
    public T Forward<T>(IForwardOps<T> ops, T x) => ops.Linear(this, x);
}
