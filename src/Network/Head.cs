namespace IlgpuDdpm.Network;

/// <summary>The first layer: Conv3x3 in_ch → ch on the noisy image. Parameters <c>{name}.weight</c>, <c>{name}.bias</c>.</summary>
public sealed class Head(string name, int inChannels, int outChannels) : UNetLayer(name, LayerKind.Head, inChannels, outChannels)
{
    /// <summary>The conv.</summary>
    public Conv2d Conv { get; } = new(name, inChannels, outChannels, 3);

    /// <summary>x [N,in_ch,S,S] → [N,ch,S,S].</summary>
    public override T Forward<T>(IForwardOps<T> ops, T h, T embedding) => Conv.Forward(ops, h);

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) => $"Conv3x3 {InChannels}→{OutChannels}";
}
