using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// 2-D convolution, PyTorch layout: <c>{name}.weight</c> [Cout, Cin, K, K], <c>{name}.bias</c> [Cout];
/// padding K/2. x [N,Cin,H,W] → y [N,Cout,Ho,Wo], Ho = (H + 2·(K/2) − K)/stride + 1.
/// </summary>
public sealed class Conv2d
{
    /// <summary>Creates the layer's parameters from <paramref name="source"/>.</summary>
    public Conv2d(ParameterSource source, string name, int inChannels, int outChannels, int kernel, int stride = 1, bool nearZero = false)
    {
        var specs = Specs(name, inChannels, outChannels, kernel, nearZero);
        Weight = source.Take(specs[0]);
        Bias = source.Take(specs[1]);
        Name = name;
        InChannels = inChannels;
        OutChannels = outChannels;
        Kernel = kernel;
        Stride = stride;
    }

    /// <summary>The weight and bias specs: Xavier over fan_in = Cin·K·K, fan_out = Cout·K·K; bias zero.</summary>
    public static ParameterSpec[] Specs(string name, int inChannels, int outChannels, int kernel, bool nearZero = false) =>
    [
        new($"{name}.weight", [outChannels, inChannels, kernel, kernel],
            ParameterInit.Xavier(inChannels * kernel * kernel, outChannels * kernel * kernel, nearZero)),
        new($"{name}.bias", [outChannels], ParameterInit.Zeros),
    ];

    /// <summary>Multiply-adds ×2 for one image whose output is <paramref name="outH"/>×<paramref name="outW"/>.</summary>
    public static double Flops(int inChannels, int outChannels, int kernel, int outH, int outW) =>
        2.0 * outChannels * inChannels * kernel * kernel * outH * outW;

    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name { get; }

    /// <summary>[Cout, Cin, K, K].</summary>
    public Parameter Weight { get; }

    /// <summary>[Cout].</summary>
    public Parameter Bias { get; }

    /// <summary>Cin.</summary>
    public int InChannels { get; }

    /// <summary>Cout.</summary>
    public int OutChannels { get; }

    /// <summary>K.</summary>
    public int Kernel { get; }

    /// <summary>1 or 2.</summary>
    public int Stride { get; }

    /// <summary>x [N,Cin,H,W] → [N,Cout,Ho,Wo].</summary>
    public Tensor Forward(Tape tape, Tensor x) => tape.Conv2d(x, Weight, Bias, Stride, Kernel / 2);
}
