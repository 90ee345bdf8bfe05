namespace IlgpuDdpm.Network;

/// <summary>
/// The DDPM residual block (DESIGN.md §4), in → out channels, act = the config's activation:
/// <code>
/// h = conv1(act(norm1(x)))                       conv1: Conv3x3 in→out
/// h = h + temb_proj(act(temb))[n, c]             temb_proj: Linear 4ch→out, broadcast over H, W
/// h = conv2(Dropout(act(norm2(h))))              conv2: Conv3x3 out→out, starts near zero
/// return h + (in == out ? x : skip(x))           skip: Conv1x1 in→out, only when in ≠ out
/// </code>
/// On the up path x is concat(h, skip) and <see cref="SkipChannels"/> of its in channels come from the skip.
/// Parameters under <c>{name}.</c>: norm1, conv1, temb_proj, norm2, conv2[, skip] (each .weight, .bias).
/// </summary>
public sealed class ResBlock : UNetLayer
{
    private readonly int skipChannels;

    /// <summary>
    /// A block reading <paramref name="inChannels"/> channels, of which the last <paramref name="skipChannels"/>
    /// (0 on the down path) are concatenated from the skip stack.
    /// </summary>
    public ResBlock(string name, int inChannels, int outChannels, int embeddingDim, int groups, float dropout, int skipChannels = 0)
        : base(name, LayerKind.ResBlock, inChannels, outChannels)
    {
        this.skipChannels = skipChannels;
        Dropout = dropout;
        Norm1 = new GroupNorm($"{name}.norm1", inChannels, groups);
        Conv1 = new Conv2d($"{name}.conv1", inChannels, outChannels, 3);
        TembProj = new Linear($"{name}.temb_proj", embeddingDim, outChannels);
        Norm2 = new GroupNorm($"{name}.norm2", outChannels, groups);
        Conv2 = new Conv2d($"{name}.conv2", outChannels, outChannels, 3, nearZero: true);
        Skip = inChannels != outChannels ? new Conv2d($"{name}.skip", inChannels, outChannels, 1) : null;
    }

    /// <inheritdoc/>
    public override int SkipChannels => skipChannels;

    /// <summary>Dropout probability before conv2 (training only).</summary>
    public float Dropout { get; }

    /// <summary>GroupNorm of the input.</summary>
    public GroupNorm Norm1 { get; }

    /// <summary>Conv3x3 in→out.</summary>
    public Conv2d Conv1 { get; }

    /// <summary>Linear 4ch→out of act(temb).</summary>
    public Linear TembProj { get; }

    /// <summary>GroupNorm after the embedding is added.</summary>
    public GroupNorm Norm2 { get; }

    /// <summary>Conv3x3 out→out, initialised near zero.</summary>
    public Conv2d Conv2 { get; }

    /// <summary>Conv1x1 in→out on the residual path; null when in = out.</summary>
    public Conv2d? Skip { get; }

    /// <summary>
    /// x [N,in,H,W], <paramref name="embedding"/> = act(temb) [N,4ch] → [N,out,H,W]. Dropout (p &gt; 0)
    /// draws N·out·H·W numbers.
    /// </summary>
    public override T Forward<T>(IForwardOps<T> ops, T x, T embedding)
    {
        // The two adds run in the convolutions' epilogues (Conv2dAdd): conv1 adds the embedding's projection, conv2
        // the residual x or skip(x).
        var h = Conv1.Forward(ops, Norm1.ForwardActivated(ops, x), () => TembProj.Forward(ops, embedding));
        h = Norm2.ForwardActivated(ops, h, Dropout);
        return Conv2.Forward(ops, h, () => Skip is null ? x : Skip.Forward(ops, x));
    }

    /// <inheritdoc/>
    public override string Describe(int[] outputShape, Activation activation) =>
        SkipChannels > 0 ? $"ResBlock {InChannels - SkipChannels}+{SkipChannels}→{OutChannels}" : $"ResBlock {InChannels}→{OutChannels}";
}
