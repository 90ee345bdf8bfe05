using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// Doubles the resolution: nearest-neighbour ×2, then Conv3x3 (padding 1) C→C.
/// x [N,C,H,W] → [N,C,2H,2W]. Parameters <c>{name}.weight</c> [C, C, 3, 3], <c>{name}.bias</c> [C].
/// </summary>
public sealed class Upsample
{
    /// <summary>Creates the conv from <paramref name="source"/>.</summary>
    public Upsample(ParameterSource source, string name, int channels)
    {
        Conv = new Conv2d(source, name, channels, channels, 3);
    }

    /// <summary>The conv's specs.</summary>
    public static ParameterSpec[] Specs(string name, int channels) => Conv2d.Specs(name, channels, channels, 3);

    /// <summary>Multiply-adds ×2 per image with input resolution <paramref name="h"/>×<paramref name="w"/>.</summary>
    public static double Flops(int channels, int h, int w) => Conv2d.Flops(channels, channels, 3, 2 * h, 2 * w);

    /// <summary>The conv after the nearest-neighbour upsampling.</summary>
    public Conv2d Conv { get; }

    /// <summary>x [N,C,H,W] → [N,C,2H,2W].</summary>
    public Tensor Forward(Tape tape, Tensor x) => Conv.Forward(tape, tape.Upsample2x(x));
}
