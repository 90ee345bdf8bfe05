using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// Fully connected layer, PyTorch layout: <c>{name}.weight</c> [Out, In], <c>{name}.bias</c> [Out].
/// x [N,In] → y [N,Out] = x·Wᵀ + b.
/// </summary>
public sealed class Linear
{
    /// <summary>Creates the layer's parameters from <paramref name="source"/>.</summary>
    public Linear(ParameterSource source, string name, int inFeatures, int outFeatures, bool nearZero = false)
    {
        var specs = Specs(name, inFeatures, outFeatures, nearZero);
        Weight = source.Take(specs[0]);
        Bias = source.Take(specs[1]);
        Name = name;
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
    }

    /// <summary>The weight and bias specs: Xavier over fan_in = In, fan_out = Out; bias zero.</summary>
    public static ParameterSpec[] Specs(string name, int inFeatures, int outFeatures, bool nearZero = false) =>
    [
        new($"{name}.weight", [outFeatures, inFeatures], ParameterInit.Xavier(inFeatures, outFeatures, nearZero)),
        new($"{name}.bias", [outFeatures], ParameterInit.Zeros),
    ];

    /// <summary>Multiply-adds ×2 for one row.</summary>
    public static double Flops(int inFeatures, int outFeatures) => 2.0 * inFeatures * outFeatures;

    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name { get; }

    /// <summary>[Out, In].</summary>
    public Parameter Weight { get; }

    /// <summary>[Out].</summary>
    public Parameter Bias { get; }

    /// <summary>In.</summary>
    public int InFeatures { get; }

    /// <summary>Out.</summary>
    public int OutFeatures { get; }

    /// <summary>x [N,In] → [N,Out].</summary>
    public Tensor Forward(Tape tape, Tensor x) => tape.Linear(x, Weight, Bias);
}
