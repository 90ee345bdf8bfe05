using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Network;

/// <summary>
/// The DDPM U-Net (Ho et al. 2020, DESIGN.md §4) predicting the noise ε̂(x_t, t) on a device: the module
/// tree of <see cref="UNetModules"/> (the architecture, described once) and its parameters. They are
/// created on the device in the order the planning pass reads them (<see cref="UNetLayout.Parameters"/>)
/// with the dotted names of docs/network.md and initialised from a seed (<see cref="Initialize"/>).
/// The UNet owns them and frees them on <see cref="Dispose"/>.
/// </summary>
public sealed class UNet : IDisposable
{
    /// <summary>The gain of the layers that start near zero (TF variance_scaling scale 1e-10 → √ = 1e-5).</summary>
    public const float NearZeroGain = 1e-5f;

    private readonly ParameterSet parameters;
    private bool disposed;

    /// <summary>
    /// Builds the U-Net of <paramref name="config"/> on <paramref name="device"/> and initialises it
    /// from <paramref name="seed"/>. Throws <see cref="ArgumentException"/> (one line) for an invalid config.
    /// </summary>
    public UNet(ComputeDevice device, UNetConfig config, ulong seed = 0)
    {
        Modules = new UNetModules(config);
        Layout = UNetLayout.Plan(Modules);
        Device = device;
        Config = config;
        parameters = new ParameterSet(device, Layout.Parameters);
        ParameterCount = parameters.Length;
        Initialize(seed);
    }

    /// <summary>The device the parameters live on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The architecture.</summary>
    public UNetConfig Config { get; }

    /// <summary>The module tree: the one description of the architecture.</summary>
    public UNetModules Modules { get; }

    /// <summary>The planned layout (names, shapes, FLOPs) derived from <see cref="Modules"/>.</summary>
    public UNetLayout Layout { get; }

    /// <summary>Every parameter in a fixed order: forward order, layer by layer (docs/network.md); views on one flat buffer.</summary>
    public ParameterSet Parameters => parameters;

    /// <summary>Total number of trainable values.</summary>
    public long ParameterCount { get; }

    /// <summary>The parameter called <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> (one line) if there is none.</summary>
    public Parameter GetParameter(string name) => parameters.Get(name);

    /// <summary>Whether a parameter called <paramref name="name"/> exists.</summary>
    public bool TryGetParameter(string name, out Parameter parameter) => parameters.TryGet(name, out parameter);

    /// <summary>Dropout numbers one training forward pass draws for a batch of <paramref name="batch"/>: advance the key by this much per step.</summary>
    public long DropoutDraws(int batch) => Layout.DropoutDrawsPerImage * batch;

    /// <summary>The layer-by-layer summary (shapes, parameters, FLOPs).</summary>
    public ModelSummary Summary() => ModelSummary.For(Layout);

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
        return Modules.Forward(new TapeOps(tape, GetParameter, cfg.Activation, t, n, dropoutKey, globalBatch, firstImage), x);
    }

    /// <summary>
    /// One evaluation ε̂ = ε_θ(x, t) from host arrays to a host array, no gradient, dropout off:
    /// x holds N images [N, in_ch, S, S] flattened, <paramref name="t"/> their N 0-based steps.
    /// Throws <see cref="ArgumentException"/> (one line) when the lengths do not fit the model.
    /// </summary>
    public float[] Predict(float[] x, int[] t)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var cfg = Config;
        int n = t.Length, d = cfg.InChannels * cfg.ImageSize * cfg.ImageSize;
        if (n == 0 || (long)x.Length != (long)n * d)
            throw new ArgumentException($"model input of {x.Length} values for {n} timesteps does not match the model: expected {n} × {cfg.InChannels}×{cfg.ImageSize}×{cfg.ImageSize} values");
        var tape = new Tape(Device) { Training = false };
        using var noGrad = tape.NoGrad();
        using var input = Tensor.FromArray(Device, x, n, cfg.InChannels, cfg.ImageSize, cfg.ImageSize);
        using var steps = Device.Pool.Rent<int>(n);
        steps.CopyFrom(t);
        try
        {
            return Forward(tape, input, steps.View, default).ToArray();
        }
        finally
        {
            tape.Clear();
        }
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
        parameters.Load((i, spec) => InitialValues(spec, (uint)i, seed, nearZeroGain));
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

    /// <summary>Sets every parameter's gradient to zero (one memset: <see cref="ParameterSet.ZeroGrad"/>).</summary>
    public void ZeroGrad() => parameters.ZeroGrad();

    /// <summary>Returns the parameters' flat buffers to the pool.</summary>
    public void Dispose()
    {
        disposed = true;
        parameters.Dispose();
    }
}
