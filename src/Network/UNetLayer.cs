namespace IlgpuDdpm.Network;

/// <summary>What a row of the layout is.</summary>
public enum LayerKind { TimestepEmbedding, Head, ResBlock, Attention, Downsample, Upsample, Tail }

/// <summary>
/// One layer of the U-Net's module tree (one row of <see cref="UNetLayout"/> and of the summary): its
/// dotted name (the prefix of its parameters), kind, channels in and out, and its forward pass written
/// once against <see cref="IForwardOps{T}"/>. Layers hold shapes and parameter specs only; the
/// parameters themselves live in the <see cref="UNet"/> on a device.
/// </summary>
public abstract class UNetLayer(string name, LayerKind kind, int inChannels, int outChannels)
{
    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name => name;

    /// <summary>What the layer is.</summary>
    public LayerKind Kind => kind;

    /// <summary>Input channels (features for the time embedding), after the skip concat for up-path ResBlocks.</summary>
    public int InChannels => inChannels;

    /// <summary>Output channels (features for the time embedding).</summary>
    public int OutChannels => outChannels;

    /// <summary>
    /// Channels of the skip tensor concatenated to the input before this layer (0: none). The U-Net
    /// pops its skip stack for exactly the layers where this is positive.
    /// </summary>
    public virtual int SkipChannels => 0;

    /// <summary>
    /// h → the layer's output. <paramref name="embedding"/> is the activated time embedding [N, 4ch],
    /// computed once per pass; only the layers conditioned on the timestep read it.
    /// </summary>
    public abstract T Forward<T>(IForwardOps<T> ops, T h, T embedding);

    /// <summary>One line for the summary, e.g. "ResBlock 32+16→32", given the output shape of one image.</summary>
    public abstract string Describe(int[] outputShape, Activation activation);
}
