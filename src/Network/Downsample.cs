namespace IlgpuDdpm.Network;

/// <summary>
/// Halves the resolution: Conv3x3, stride 2, padding 1, C→C. x [N,C,H,W] → [N,C,H/2,W/2] (H, W even).
/// Parameters <c>{name}.weight</c> [C, C, 3, 3], <c>{name}.bias</c> [C].
/// </summary>
public sealed class Downsample(string name, int channels) : UNetLayer(name, LayerKind.Downsample, channels, channels)
{
    /// <summary>The strided conv.</summary>
    public Conv2d Conv { get; } = new(name, channels, channels, 3, stride: 2);

    /// <summary>x [N,C,H,W] → [N,C,H/2,W/2].</summary>
    public override T Forward<T>(IForwardOps<T> ops, T h, T embedding) => Conv.Forward(ops, h);

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) => $"Conv3x3 s2 {InChannels}→{OutChannels}";
}
