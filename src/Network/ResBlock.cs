using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Network;

/// <summary>
/// The DDPM residual block (DESIGN.md §4), in → out channels:
/// <code>
/// h = conv1(SiLU(norm1(x)))                      conv1: Conv3x3 in→out
/// h = h + temb_proj(SiLU(temb))[n, c]            temb_proj: Linear 4ch→out, broadcast over H, W
/// h = conv2(Dropout(SiLU(norm2(h))))             conv2: Conv3x3 out→out, starts near zero
/// return h + (in == out ? x : skip(x))           skip: Conv1x1 in→out, only when in ≠ out
/// </code>
/// Parameters under <c>{name}.</c>: norm1, conv1, temb_proj, norm2, conv2[, skip] (each .weight, .bias).
/// </summary>
public sealed class ResBlock
{
    /// <summary>Creates the block's parameters from <paramref name="source"/>.</summary>
    public ResBlock(ParameterSource source, string name, int inChannels, int outChannels, int embeddingDim, int groups, float dropout)
    {
        Name = name;
        InChannels = inChannels;
        OutChannels = outChannels;
        Dropout = dropout;
        Norm1 = new GroupNorm(source, $"{name}.norm1", inChannels, groups);
        Conv1 = new Conv2d(source, $"{name}.conv1", inChannels, outChannels, 3);
        TembProj = new Linear(source, $"{name}.temb_proj", embeddingDim, outChannels);
        Norm2 = new GroupNorm(source, $"{name}.norm2", outChannels, groups);
        Conv2 = new Conv2d(source, $"{name}.conv2", outChannels, outChannels, 3, nearZero: true);
        Skip = inChannels != outChannels ? new Conv2d(source, $"{name}.skip", inChannels, outChannels, 1) : null;
    }

    /// <summary>Every parameter spec, in creation order.</summary>
    public static ParameterSpec[] Specs(string name, int inChannels, int outChannels, int embeddingDim) =>
    [
        .. GroupNorm.Specs($"{name}.norm1", inChannels),
        .. Conv2d.Specs($"{name}.conv1", inChannels, outChannels, 3),
        .. Linear.Specs($"{name}.temb_proj", embeddingDim, outChannels),
        .. GroupNorm.Specs($"{name}.norm2", outChannels),
        .. Conv2d.Specs($"{name}.conv2", outChannels, outChannels, 3, nearZero: true),
        .. inChannels != outChannels ? Conv2d.Specs($"{name}.skip", inChannels, outChannels, 1) : [],
    ];

    /// <summary>Multiply-adds ×2 per image at resolution <paramref name="h"/>×<paramref name="w"/>.</summary>
    public static double Flops(int inChannels, int outChannels, int embeddingDim, int h, int w) =>
        Conv2d.Flops(inChannels, outChannels, 3, h, w) + Linear.Flops(embeddingDim, outChannels) +
        Conv2d.Flops(outChannels, outChannels, 3, h, w) +
        (inChannels != outChannels ? Conv2d.Flops(inChannels, outChannels, 1, h, w) : 0);

    /// <summary>The dotted prefix.</summary>
    public string Name { get; }

    /// <summary>Input channels.</summary>
    public int InChannels { get; }

    /// <summary>Output channels.</summary>
    public int OutChannels { get; }

    /// <summary>Dropout probability before conv2 (training only).</summary>
    public float Dropout { get; }

    /// <summary>GroupNorm of the input.</summary>
    public GroupNorm Norm1 { get; }

    /// <summary>Conv3x3 in→out.</summary>
    public Conv2d Conv1 { get; }

    /// <summary>Linear 4ch→out of SiLU(temb).</summary>
    public Linear TembProj { get; }

    /// <summary>GroupNorm after the embedding is added.</summary>
    public GroupNorm Norm2 { get; }

    /// <summary>Conv3x3 out→out, initialised near zero.</summary>
    public Conv2d Conv2 { get; }

    /// <summary>Conv1x1 in→out on the residual path; null when in = out.</summary>
    public Conv2d? Skip { get; }

    /// <summary>
    /// x [N,in,H,W], <paramref name="activatedEmbedding"/> = SiLU(temb) [N,4ch] (the UNet computes it once
    /// for all blocks) → [N,out,H,W]. Dropout draws N·out·H·W numbers from <paramref name="dropoutKey"/>
    /// (only when <see cref="Tape.Training"/> and p &gt; 0).
    /// </summary>
    public Tensor Forward(Tape tape, Tensor x, Tensor activatedEmbedding, PhiloxKey dropoutKey)
    {
        var h = Conv1.Forward(tape, tape.Silu(Norm1.Forward(tape, x)));
        h = tape.AddChannelVector(h, TembProj.Forward(tape, activatedEmbedding));
        h = tape.Silu(Norm2.Forward(tape, h));
        if (Dropout > 0f) h = tape.Dropout(h, Dropout, dropoutKey);
        h = Conv2.Forward(tape, h);
        return tape.Add(h, Skip is null ? x : Skip.Forward(tape, x));
    }
}
