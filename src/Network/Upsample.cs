namespace IlgpuDdpm.Network;

/// <summary>
/// Doubles the resolution: nearest-neighbour ×2, then Conv3x3 (padding 1) C→C.
/// x [N,C,H,W] → [N,C,2H,2W]. Parameters <c>{name}.weight</c> [C, C, 3, 3], <c>{name}.bias</c> [C].
/// </summary>
public sealed class Upsample(string name, int channels) : UNetLayer(name, LayerKind.Upsample, channels, channels)
{
    /// <summary>The conv after the nearest-neighbour upsampling.</summary>
    public Conv2d Conv { get; } = new(name, channels, channels, 3);

    /// <summary>x [N,C,H,W] → [N,C,2H,2W].</summary>
    public override T Forward<T>(IForwardOps<T> ops, T h, T embedding) => Conv.Forward(ops, ops.Upsample2x(h));

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) => $"nearest×2, Conv3x3 {InChannels}→{OutChannels}";
}
