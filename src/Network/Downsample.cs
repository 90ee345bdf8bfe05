using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// Halves the resolution: Conv3x3, stride 2, padding 1, C→C. x [N,C,H,W] → [N,C,H/2,W/2] (H, W even).
/// Parameters <c>{name}.weight</c> [C, C, 3, 3], <c>{name}.bias</c> [C].
/// </summary>
public sealed class Downsample
{
    /// <summary>Creates the conv from <paramref name="source"/>.</summary>
    public Downsample(ParameterSource source, string name, int channels)
    {
        Conv = new Conv2d(source, name, channels, channels, 3, stride: 2);
    }

    /// <summary>The conv's specs.</summary>
    public static ParameterSpec[] Specs(string name, int channels) => Conv2d.Specs(name, channels, channels, 3);

    /// <summary>Multiply-adds ×2 per image with input resolution <paramref name="h"/>×<paramref name="w"/>.</summary>
    public static double Flops(int channels, int h, int w) => Conv2d.Flops(channels, channels, 3, h / 2, w / 2);

    /// <summary>The strided conv.</summary>
    public Conv2d Conv { get; }

    /// <summary>x [N,C,H,W] → [N,C,H/2,W/2].</summary>
    public Tensor Forward(Tape tape, Tensor x) => Conv.Forward(tape, x);
}
