namespace IlgpuDdpm.Network;

/// <summary>
/// The DDPM U-Net (Ho et al. 2020, DESIGN.md §4) as a module tree: the one description of the
/// architecture. Built from a <see cref="UNetConfig"/> without a device, it lists its layers in forward
/// order; <see cref="Forward{T}"/> runs them, on a tape to compute (<see cref="UNet"/>) or on shapes to
/// plan (<see cref="UNetLayout"/>: parameter names and shapes, FLOPs, summary rows).
/// <code>
/// temb = temb.1(act(temb.0(sinusoid(t)))); e = act(temb)
/// h = head(x); push h
/// for level l = 0..L−1:  ResBlock [+ attention] × num_res_blocks (push each); Downsample (push) unless last
/// mid: ResBlock, SelfAttention, ResBlock
/// for level l = L−1..0:  (h = concat(h, pop); ResBlock [+ attention]) × (num_res_blocks + 1); Upsample unless l = 0
/// ε̂ = tail.conv(act(tail.norm(h)))
/// </code>
/// </summary>
public sealed class UNetModules
{
    /// <summary>A layer of the trunk and whether its output is pushed onto the skip stack.</summary>
    private readonly record struct Stage(UNetLayer Layer, bool PushesSkip);

    private readonly List<Stage> stages = new();

    /// <summary>The module tree of <paramref name="config"/> (validated first; one-line ArgumentException otherwise).</summary>
    public UNetModules(UNetConfig config)
    {
        Config = config.Validate();
        int tdim = config.TimeEmbeddingDim, g = config.Groups, levels = config.Levels;
        float dropout = config.Dropout;
        Embedding = new TimestepEmbedding("temb", config.Channels, tdim);

        // The skip stack's channel counts: an up-path ResBlock reads h and the skip it pops.
        var skips = new Stack<int>();
        int c = config.Channels, res = config.ImageSize;
        void Add(UNetLayer layer, bool pushesSkip = false)
        {
            stages.Add(new Stage(layer, pushesSkip));
            c = layer.OutChannels;
            if (pushesSkip) skips.Push(c);
        }

        Add(new Head("head", config.InChannels, c), pushesSkip: true);
        for (int l = 0; l < levels; l++)
        {
            int cout = config.LevelChannels(l);
            for (int i = 0; i < config.NumResBlocks; i++)
            {
                bool attention = config.HasAttention(res);
                Add(new ResBlock($"down.{l}.block.{i}", c, cout, tdim, g, dropout), pushesSkip: !attention);
                if (attention) Add(new SelfAttention($"down.{l}.attn.{i}", c, g), pushesSkip: true);
            }
            if (l != levels - 1)
            {
                Add(new Downsample($"down.{l}.downsample", c), pushesSkip: true);
                res /= 2;
            }
        }

        Add(new ResBlock("mid.block1", c, c, tdim, g, dropout));
        Add(new SelfAttention("mid.attn", c, g));
        Add(new ResBlock("mid.block2", c, c, tdim, g, dropout));

        for (int l = levels - 1; l >= 0; l--)
        {
            int cout = config.LevelChannels(l);
            for (int i = 0; i < config.NumResBlocks + 1; i++)
            {
                int skip = skips.Pop();
                Add(new ResBlock($"up.{l}.block.{i}", c + skip, cout, tdim, g, dropout, skipChannels: skip));
                if (config.HasAttention(res)) Add(new SelfAttention($"up.{l}.attn.{i}", c, g));
            }
            if (l != 0)
            {
                Add(new Upsample($"up.{l}.upsample", c));
                res *= 2;
            }
        }
        if (skips.Count != 0)
            throw new InvalidOperationException($"U-Net: {skips.Count} skip connections left unused (the architecture is inconsistent)");
        Add(new Tail("tail", c, config.InChannels, g));
    }

    /// <summary>The architecture.</summary>
    public UNetConfig Config { get; }

    /// <summary>The time embedding (the first row of the layout).</summary>
    public TimestepEmbedding Embedding { get; }

    /// <summary>The trunk's layers in forward order, head to tail.</summary>
    public IEnumerable<UNetLayer> Layers => stages.Select(s => s.Layer);

    /// <summary>
    /// ε̂ for x [N, in_ch, S, S] (the timesteps belong to <paramref name="ops"/>): the embedding, then
    /// each layer in order, concatenating a popped skip before the layers that take one and pushing the
    /// output of the layers that give one.
    /// </summary>
    public T Forward<T>(IForwardOps<T> ops, T x)
    {
        var sinusoid = ops.TimestepSinusoid(Config.Channels);
        var embedding = ops.Activate(ops.Layer(Embedding, Embedding.Forward(ops, sinusoid, default!))); // act(temb), shared by every ResBlock
        var skips = new Stack<T>();
        var h = x;
        foreach (var (layer, pushesSkip) in stages)
        {
            if (layer.SkipChannels > 0) h = ops.Concat(h, skips.Pop());
            h = ops.Layer(layer, layer.Forward(ops, h, embedding));
            if (pushesSkip) skips.Push(h);
        }
        if (skips.Count != 0)
            throw new InvalidOperationException($"U-Net forward: {skips.Count} skip connections left on the stack");
        return h;
    }
}
