namespace IlgpuDdpm.Network;

/// <summary>What a row of the layout is.</summary>
public enum LayerKind { TimestepEmbedding, Head, ResBlock, Attention, Downsample, Upsample, Tail }

/// <summary>
/// One layer of the U-Net as planned from a config, without a device: its dotted name, kind, input
/// channels (after the skip concat for up-path ResBlocks, of which <c>SkipChannels</c> came from the
/// skip stack), output shape per image ([C, H, W], or
/// [4ch] for the time embedding), parameter specs, forward FLOPs per image (2 × the multiply-adds of
/// its convs, linears and attention matmuls) and how many dropout numbers it draws per image.
/// </summary>
public sealed record LayerInfo(
    string Name, LayerKind Kind, int InChannels, int[] OutputShape, IReadOnlyList<ParameterSpec> Parameters,
    double Flops, long DropoutDrawsPerImage, int SkipChannels = 0)
{
    /// <summary>Number of trainable values.</summary>
    public long ParameterCount => Parameters.Sum(p => p.Length);
}

/// <summary>
/// The U-Net of a <see cref="UNetConfig"/> as a list of <see cref="LayerInfo"/> in forward order,
/// computed without running anything. It walks the architecture the same way <see cref="UNet"/>
/// builds and runs it (DESIGN.md §4) — including the skip stack, whose channel counts it tracks and
/// which it checks is empty at the end — and the UNet checks at construction that its parameters
/// equal <see cref="Parameters"/> name for name, shape for shape, in the same order.
/// </summary>
public sealed class UNetLayout
{
    private UNetLayout(UNetConfig config, List<LayerInfo> layers)
    {
        Config = config;
        Layers = layers;
        Parameters = layers.SelectMany(l => l.Parameters).ToArray();
    }

    /// <summary>The config it was planned from.</summary>
    public UNetConfig Config { get; }

    /// <summary>Every layer in forward order.</summary>
    public IReadOnlyList<LayerInfo> Layers { get; }

    /// <summary>Every parameter in the UNet's fixed order (layer by layer, forward order).</summary>
    public IReadOnlyList<ParameterSpec> Parameters { get; }

    /// <summary>Total trainable values.</summary>
    public long ParameterCount => Layers.Sum(l => l.ParameterCount);

    /// <summary>Total forward FLOPs per image.</summary>
    public double Flops => Layers.Sum(l => l.Flops);

    /// <summary>Dropout numbers one forward pass draws per image in training (0 without dropout).</summary>
    public long DropoutDrawsPerImage => Layers.Sum(l => l.DropoutDrawsPerImage);

    /// <summary>Plans the U-Net of <paramref name="config"/> (validated first).</summary>
    public static UNetLayout Plan(UNetConfig config)
    {
        config.Validate();
        var layers = new List<LayerInfo>();
        int ch = config.Channels, temb = config.TimeEmbeddingDim, levels = config.Levels;
        bool dropout = config.Dropout > 0f;

        void ResBlock(string name, int cin, int cout, int res, int skip = 0) => layers.Add(new LayerInfo(
            name, LayerKind.ResBlock, cin, [cout, res, res], Network.ResBlock.Specs(name, cin, cout, temb),
            Network.ResBlock.Flops(cin, cout, temb, res, res), dropout ? (long)cout * res * res : 0, skip));

        void Attention(string name, int c, int res) => layers.Add(new LayerInfo(
            name, LayerKind.Attention, c, [c, res, res], SelfAttention.Specs(name, c), SelfAttention.Flops(c, res, res), 0));

        layers.Add(new LayerInfo("temb", LayerKind.TimestepEmbedding, ch, [temb], TimestepEmbedding.Specs("temb", ch, temb),
            TimestepEmbedding.Flops(ch, temb), 0));
        int res = config.ImageSize;
        layers.Add(new LayerInfo("head", LayerKind.Head, config.InChannels, [ch, res, res],
            Conv2d.Specs("head", config.InChannels, ch, 3), Conv2d.Flops(config.InChannels, ch, 3, res, res), 0));

        var skips = new Stack<int>();
        skips.Push(ch);
        int c = ch;
        for (int l = 0; l < levels; l++)
        {
            int cout = config.LevelChannels(l);
            for (int i = 0; i < config.NumResBlocks; i++)
            {
                ResBlock($"down.{l}.block.{i}", c, cout, res);
                c = cout;
                if (config.HasAttention(res)) Attention($"down.{l}.attn.{i}", c, res);
                skips.Push(c);
            }
            if (l != levels - 1)
            {
                layers.Add(new LayerInfo($"down.{l}.downsample", LayerKind.Downsample, c, [c, res / 2, res / 2],
                    Network.Downsample.Specs($"down.{l}.downsample", c), Network.Downsample.Flops(c, res, res), 0));
                res /= 2;
                skips.Push(c);
            }
        }

        ResBlock("mid.block1", c, c, res);
        Attention("mid.attn", c, res);
        ResBlock("mid.block2", c, c, res);

        for (int l = levels - 1; l >= 0; l--)
        {
            int cout = config.LevelChannels(l);
            for (int i = 0; i < config.NumResBlocks + 1; i++)
            {
                int skip = skips.Pop();
                ResBlock($"up.{l}.block.{i}", c + skip, cout, res, skip);
                c = cout;
                if (config.HasAttention(res)) Attention($"up.{l}.attn.{i}", c, res);
            }
            if (l != 0)
            {
                layers.Add(new LayerInfo($"up.{l}.upsample", LayerKind.Upsample, c, [c, res * 2, res * 2],
                    Network.Upsample.Specs($"up.{l}.upsample", c), Network.Upsample.Flops(c, res, res), 0));
                res *= 2;
            }
        }
        if (skips.Count != 0)
            throw new InvalidOperationException($"U-Net plan: {skips.Count} skip connections left unused (the architecture is inconsistent)");

        layers.Add(new LayerInfo("tail", LayerKind.Tail, c, [config.InChannels, res, res],
            [.. GroupNorm.Specs("tail.norm", c), .. Conv2d.Specs("tail.conv", c, config.InChannels, 3, nearZero: true)],
            Conv2d.Flops(c, config.InChannels, 3, res, res), 0));
        return new UNetLayout(config, layers);
    }
}
