namespace IlgpuDdpm.Network;

/// <summary>
/// The last layer: ε̂ = conv(act(norm(h))), GroupNorm then Conv3x3 C → in_ch, the conv starting near zero.
/// Parameters <c>{name}.norm.*</c> [C] and <c>{name}.conv.*</c> [in_ch, C, 3, 3], [in_ch].
/// </summary>
public sealed class Tail(string name, int inChannels, int outChannels, int groups) : UNetLayer(name, LayerKind.Tail, inChannels, outChannels)
{
    /// <summary>GroupNorm before the output conv.</summary>
    public GroupNorm Norm { get; } = new($"{name}.norm", inChannels, groups);

    /// <summary>Conv3x3 C → in_ch, initialised near zero.</summary>
    public Conv2d Conv { get; } = new($"{name}.conv", inChannels, outChannels, 3, nearZero: true);

    /// <summary>h [N,C,S,S] → ε̂ [N,in_ch,S,S].</summary>
    public override T Forward<T>(IForwardOps<T> ops, T h, T embedding) => Conv.Forward(ops, Norm.ForwardActivated(ops, h));

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) =>
        $"GroupNorm, {activation.DisplayName()}, Conv3x3 {InChannels}→{OutChannels}";
}
