using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Network;

/// <summary>
/// The DDPM U-Net (Ho et al. 2020, DESIGN.md §4) predicting the noise ε̂(x_t, t):
/// <code>
/// temb = temb.1(SiLU(temb.0(sinusoid(t))))
/// h = head(x); push h
/// for level l = 0..L−1:  ResBlock [+ attention] × num_res_blocks (push each); Downsample (push) unless last
/// mid: ResBlock, SelfAttention, ResBlock
/// for level l = L−1..0:  (h = concat(h, pop); ResBlock [+ attention]) × (num_res_blocks + 1); Upsample unless l = 0
/// ε̂ = tail.conv(SiLU(tail.norm(h)))
/// </code>
/// Parameters are created on the device in a fixed order (<see cref="UNetLayout.Parameters"/>) with the
/// dotted names of docs/network.md and initialised from a seed (<see cref="Initialize"/>).
/// The UNet owns them and frees them on <see cref="Dispose"/>.
/// </summary>
public sealed class UNet : IDisposable
{
    /// <summary>The gain of the layers that start near zero (TF variance_scaling scale 1e-10 → √ = 1e-5).</summary>
    public const float NearZeroGain = 1e-5f;

    private readonly Parameter[] parameters;
    private readonly ParameterSpec[] specs;
    private readonly Dictionary<string, Parameter> byName;
    private readonly Level[] down;
    private readonly Level[] up;
    private bool disposed;

    /// <summary>ResBlocks (with their attention, or null) and the resampler of one level.</summary>
    private sealed record Level(ResBlock[] Blocks, SelfAttention?[] Attention, Downsample? Down, Upsample? Up);

    /// <summary>
    /// Builds the U-Net of <paramref name="config"/> on <paramref name="device"/> and initialises it
    /// from <paramref name="seed"/>. Throws <see cref="ArgumentException"/> (one line) for an invalid config.
    /// </summary>
    public UNet(ComputeDevice device, UNetConfig config, ulong seed = 0)
    {
        Layout = UNetLayout.Plan(config);
        Device = device;
        Config = config;
        var source = new ParameterSource(device);
        try
        {
            int ch = config.Channels, tdim = config.TimeEmbeddingDim, levels = config.Levels, g = config.Groups;
            Embedding = new TimestepEmbedding(source, "temb", ch, tdim);
            Head = new Conv2d(source, "head", config.InChannels, ch, 3);

            int c = ch, res = config.ImageSize;
            var skips = new Stack<int>();
            skips.Push(c);
            down = new Level[levels];
            for (int l = 0; l < levels; l++)
            {
                int cout = config.LevelChannels(l);
                var blocks = new ResBlock[config.NumResBlocks];
                var attn = new SelfAttention?[config.NumResBlocks];
                for (int i = 0; i < blocks.Length; i++)
                {
                    blocks[i] = new ResBlock(source, $"down.{l}.block.{i}", c, cout, tdim, g, config.Dropout);
                    c = cout;
                    if (config.HasAttention(res)) attn[i] = new SelfAttention(source, $"down.{l}.attn.{i}", c, g);
                    skips.Push(c);
                }
                Downsample? ds = null;
                if (l != levels - 1)
                {
                    ds = new Downsample(source, $"down.{l}.downsample", c);
                    res /= 2;
                    skips.Push(c);
                }
                down[l] = new Level(blocks, attn, ds, null);
            }

            MidBlock1 = new ResBlock(source, "mid.block1", c, c, tdim, g, config.Dropout);
            MidAttention = new SelfAttention(source, "mid.attn", c, g);
            MidBlock2 = new ResBlock(source, "mid.block2", c, c, tdim, g, config.Dropout);

            up = new Level[levels];
            for (int l = levels - 1; l >= 0; l--)
            {
                int cout = config.LevelChannels(l);
                var blocks = new ResBlock[config.NumResBlocks + 1];
                var attn = new SelfAttention?[blocks.Length];
                for (int i = 0; i < blocks.Length; i++)
                {
                    blocks[i] = new ResBlock(source, $"up.{l}.block.{i}", c + skips.Pop(), cout, tdim, g, config.Dropout);
                    c = cout;
                    if (config.HasAttention(res)) attn[i] = new SelfAttention(source, $"up.{l}.attn.{i}", c, g);
                }
                Upsample? us = null;
                if (l != 0)
                {
                    us = new Upsample(source, $"up.{l}.upsample", c);
                    res *= 2;
                }
                up[l] = new Level(blocks, attn, null, us);
            }

            TailNorm = new GroupNorm(source, "tail.norm", c, g);
            TailConv = new Conv2d(source, "tail.conv", c, config.InChannels, 3, nearZero: true);

            parameters = [.. source.Parameters];
            specs = [.. source.Specs];
            if (!specs.SequenceEqual(Layout.Parameters))
                throw new InvalidOperationException("the U-Net's parameters differ from its planned layout (a bug in UNet or UNetLayout)");
        }
        catch
        {
            foreach (var p in source.Parameters) p.Dispose();
            throw;
        }
        byName = parameters.ToDictionary(p => p.Name);
        ParameterCount = parameters.Sum(p => (long)p.Length);
        Initialize(seed);
    }

    /// <summary>The device the parameters live on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The architecture.</summary>
    public UNetConfig Config { get; }

    /// <summary>The planned layout (names, shapes, FLOPs) this network was built from.</summary>
    public UNetLayout Layout { get; }

    /// <summary>Every parameter in a fixed order: forward order, layer by layer (docs/network.md).</summary>
    public IReadOnlyList<Parameter> Parameters => parameters;

    /// <summary>Total number of trainable values.</summary>
    public long ParameterCount { get; }

    /// <summary>The parameter called <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> (one line) if there is none.</summary>
    public Parameter GetParameter(string name) =>
        byName.TryGetValue(name, out var p) ? p : throw new KeyNotFoundException($"the model has no parameter named '{name}'");

    /// <summary>Whether a parameter called <paramref name="name"/> exists.</summary>
    public bool TryGetParameter(string name, out Parameter parameter) => byName.TryGetValue(name, out parameter!);

    /// <summary>Dropout numbers one training forward pass draws for a batch of <paramref name="batch"/>: advance the key by this much per step.</summary>
    public long DropoutDraws(int batch) => Layout.DropoutDrawsPerImage * batch;

    /// <summary>The layer-by-layer summary (shapes, parameters, FLOPs).</summary>
    public ModelSummary Summary() => ModelSummary.For(Config);

    /// <summary>The time embedding.</summary>
    public TimestepEmbedding Embedding { get; }

    /// <summary>Conv3x3 in_ch → ch.</summary>
    public Conv2d Head { get; }

    /// <summary>First middle ResBlock.</summary>
    public ResBlock MidBlock1 { get; }

    /// <summary>Middle self-attention.</summary>
    public SelfAttention MidAttention { get; }

    /// <summary>Second middle ResBlock.</summary>
    public ResBlock MidBlock2 { get; }

    /// <summary>GroupNorm before the output conv.</summary>
    public GroupNorm TailNorm { get; }

    /// <summary>Conv3x3 ch·mult[0] → in_ch, initialised near zero.</summary>
    public Conv2d TailConv { get; }

    /// <summary>
    /// Predicts the noise: x [N, in_ch, S, S] (S = image size), t [N] 0-based steps on the device →
    /// ε̂ [N, in_ch, S, S], tape-owned. Dropout (only when <see cref="Tape.Training"/>) uses
    /// <paramref name="dropoutKey"/>: ResBlock b (forward order) draws from offset key.Offset + Σ_{b'&lt;b} N·C_b'·H_b'·W_b',
    /// <see cref="DropoutDraws"/> numbers in all.
    /// </summary>
    public Tensor Forward(Tape tape, Tensor x, ArrayView<int> t, PhiloxKey dropoutKey) => Forward(tape, x, t, dropoutKey, 0, 0);

    /// <summary>
    /// <see cref="Forward(Tape, Tensor, ArrayView{int}, PhiloxKey)"/> for a shard of a larger batch (data-parallel
    /// training, docs/distributed.md): x holds images <paramref name="firstImage"/>.. of a global batch of
    /// <paramref name="globalBatch"/>, and each image draws exactly the dropout numbers it would draw in the whole
    /// batch: block b's region is Σ_{b'&lt;b} G·C_b'·H_b'·W_b' long, image i's numbers start at i·C_b·H_b·W_b in it.
    /// globalBatch 0 means the batch is x itself.
    /// </summary>
    public Tensor Forward(Tape tape, Tensor x, ArrayView<int> t, PhiloxKey dropoutKey, int globalBatch, int firstImage)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var cfg = Config;
        if (x.Rank != 4 || x.Dim(1) != cfg.InChannels || x.Dim(2) != cfg.ImageSize || x.Dim(3) != cfg.ImageSize)
            throw new ArgumentException(
                $"model input {Tensor.ShapeText(x.Shape)} does not match the model: expected [N, {cfg.InChannels}, {cfg.ImageSize}, {cfg.ImageSize}]");
        int n = x.Dim(0);
        if (t.Length != n) throw new ArgumentException($"expected {n} timesteps (one per image), got {t.Length}");

        if (globalBatch == 0) globalBatch = n;
        if (firstImage < 0 || firstImage + n > globalBatch)
            throw new ArgumentException($"a shard of images {firstImage}..{firstImage + n - 1} does not fit a batch of {globalBatch}");
        var key = dropoutKey;
        Tensor Block(ResBlock block, Tensor input, Tensor embedding)
        {
            long perImage = (long)block.OutChannels * input.Dim(2) * input.Dim(3); // dropout acts on [N, out, H, W]
            var y = block.Forward(tape, input, embedding, key.Advance(perImage * firstImage));
            if (block.Dropout > 0f) key = key.Advance(perImage * globalBatch);
            return y;
        }

        var emb = tape.Silu(Embedding.Forward(tape, t, n)); // SiLU(temb), shared by every ResBlock
        var h = Head.Forward(tape, x);
        var skips = new Stack<Tensor>();
        skips.Push(h);
        foreach (var level in down)
        {
            for (int i = 0; i < level.Blocks.Length; i++)
            {
                h = Block(level.Blocks[i], h, emb);
                if (level.Attention[i] is { } attn) h = attn.Forward(tape, h);
                skips.Push(h);
            }
            if (level.Down is { } ds)
            {
                h = ds.Forward(tape, h);
                skips.Push(h);
            }
        }

        h = Block(MidBlock1, h, emb);
        h = MidAttention.Forward(tape, h);
        h = Block(MidBlock2, h, emb);

        for (int l = up.Length - 1; l >= 0; l--)
        {
            var level = up[l];
            for (int i = 0; i < level.Blocks.Length; i++)
            {
                h = Block(level.Blocks[i], tape.Concat(h, skips.Pop()), emb);
                if (level.Attention[i] is { } attn) h = attn.Forward(tape, h);
            }
            if (level.Up is { } us) h = us.Forward(tape, h);
        }
        if (skips.Count != 0)
            throw new InvalidOperationException($"U-Net forward: {skips.Count} skip connections left on the stack");

        return TailConv.Forward(tape, tape.Silu(TailNorm.Forward(tape, h)));
    }

    /// <summary>
    /// (Re)initialises every parameter from <paramref name="seed"/> (DESIGN.md §4): Xavier-uniform
    /// weights, zero biases, GroupNorm γ = 1 and β = 0; the near-zero layers get gain
    /// <paramref name="nearZeroGain"/> (default 1e-5; gradient checks pass 1). Parameter i draws from
    /// Philox stream i: element j = bound·(2·Philox.Uniform(seed, i, j) − 1). Values are made on the host
    /// and uploaded, so every accelerator gets the same bits.
    /// </summary>
    public void Initialize(ulong seed, float nearZeroGain = NearZeroGain)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        for (int i = 0; i < parameters.Length; i++)
            parameters[i].CopyFrom(InitialValues(specs[i], (uint)i, seed, nearZeroGain));
    }

    /// <summary>The initial values of parameter <paramref name="stream"/> with <paramref name="spec"/> (see <see cref="Initialize"/>).</summary>
    public static float[] InitialValues(ParameterSpec spec, uint stream, ulong seed, float nearZeroGain = NearZeroGain)
    {
        var values = new float[checked((int)spec.Length)];
        switch (spec.Init.Kind)
        {
            case InitKind.Zeros:
                break;
            case InitKind.Ones:
                Array.Fill(values, 1f);
                break;
            case InitKind.XavierUniform:
                float bound = (float)spec.Init.Bound(spec.Init.NearZero ? nearZeroGain : 1.0);
                // Philox.Uniform(seed, stream, j) is word j%4 of block j/4: compute each block once.
                for (int j = 0; j < values.Length; j += 4)
                {
                    Philox.Block(seed, stream, (ulong)j >> 2, out uint x0, out uint x1, out uint x2, out uint x3);
                    values[j] = bound * (2f * Philox.ToUniform(x0) - 1f);
                    if (j + 1 < values.Length) values[j + 1] = bound * (2f * Philox.ToUniform(x1) - 1f);
                    if (j + 2 < values.Length) values[j + 2] = bound * (2f * Philox.ToUniform(x2) - 1f);
                    if (j + 3 < values.Length) values[j + 3] = bound * (2f * Philox.ToUniform(x3) - 1f);
                }
                break;
        }
        return values;
    }

    /// <summary>Sets every parameter's gradient to zero.</summary>
    public void ZeroGrad()
    {
        foreach (var p in parameters) p.ZeroGrad();
    }

    /// <summary>Returns every parameter (and its gradient) to the pool.</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var p in parameters) p.Dispose();
    }
}
