namespace IlgpuDdpm.Network;

/// <summary>
/// The time embedding of DESIGN.md §4: <c>temb = Linear(4ch→4ch)(act(Linear(ch→4ch)(sinusoid(t))))</c>,
/// sinusoid(t) = [sin(t·f_0..f_{h−1}), cos(t·f_0..f_{h−1})], h = ch/2, f_i = exp(−ln(10000)·i/(h−1)),
/// t the 0-based step as a float. Parameters <c>{name}.0.*</c> [4ch, ch] and <c>{name}.1.*</c> [4ch, 4ch].
/// </summary>
public sealed class TimestepEmbedding(string name, int channels, int embeddingDim)
    : UNetLayer(name, LayerKind.TimestepEmbedding, channels, embeddingDim)
{
    /// <summary>ch → 4ch.</summary>
    public Linear Dense0 { get; } = new($"{name}.0", channels, embeddingDim);

    /// <summary>4ch → 4ch.</summary>
    public Linear Dense1 { get; } = new($"{name}.1", embeddingDim, embeddingDim);

    /// <summary>The sinusoid [N, ch] of this pass's timesteps → temb [N, 4ch] (not yet activated); <paramref name="embedding"/> is not read.</summary>
    public override T Forward<T>(IForwardOps<T> ops, T h, T embedding) =>
        Dense1.Forward(ops, ops.Activate(Dense0.Forward(ops, h)));

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) =>
        $"sinusoid {InChannels} → Linear → {activation.DisplayName()} → Linear {OutChannels}";
}
