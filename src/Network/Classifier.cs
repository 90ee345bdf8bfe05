using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Network;

/// <summary>
/// The evaluation classifier's architecture: image shape, number of classes, the width of each level and
/// the GroupNorm group count. The default (<see cref="ForImages"/>) has widths 16, 32, 64, 128 and 8 groups:
/// 146k parameters for 1×28×28 images and 10 classes, about 9 MFLOP per image forward — most parameters sit
/// at the low resolutions, where they are cheap, because the classifier is trained on a CPU.
/// </summary>
public sealed record ClassifierConfig(int InChannels, int ImageSize, int Classes, int[] Widths, int Groups)
{
    /// <summary>The shipped architecture for images of <paramref name="channels"/>×<paramref name="size"/>×<paramref name="size"/>.</summary>
    public static ClassifierConfig ForImages(int channels, int size, int classes = 10) => new(channels, size, classes, [16, 32, 64, 128], 8);

    /// <summary>Width of the features the Fréchet distance and KID use (the last level's width).</summary>
    public int FeatureDim => Widths[^1];

    /// <summary>Throws <see cref="ArgumentException"/> (one line) naming the first bad field.</summary>
    public ClassifierConfig Validate()
    {
        if (InChannels <= 0 || ImageSize <= 0) throw new ArgumentException($"classifier: image shape {InChannels}×{ImageSize}×{ImageSize} must be positive");
        if (Classes < 2) throw new ArgumentException($"classifier: needs at least 2 classes, got {Classes}");
        if (Widths is null || Widths.Length == 0) throw new ArgumentException("classifier: needs at least one level width");
        foreach (var w in Widths)
            if (w <= 0 || Groups <= 0 || w % Groups != 0) throw new ArgumentException($"classifier: width {w} must be a positive multiple of {Groups} groups");
        return this;
    }

    /// <summary>Same fields (widths compared by value).</summary>
    public bool Equals(ClassifierConfig? other) =>
        other is not null && InChannels == other.InChannels && ImageSize == other.ImageSize && Classes == other.Classes &&
        Widths.AsSpan().SequenceEqual(other.Widths) && Groups == other.Groups;

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(InChannels, ImageSize, Classes, Widths.Length, Groups);

    /// <summary>"1x28x28, 10 classes, widths 16,32,64,128, 8 groups".</summary>
    public override string ToString() => $"{InChannels}x{ImageSize}x{ImageSize}, {Classes} classes, widths {string.Join(",", Widths)}, {Groups} groups";
}

/// <summary>
/// A small CNN classifier built from the U-Net's layers, used to score samples (Fréchet classifier
/// distance and KID on its penultimate features, DESIGN.md §1):
/// <code>
/// h = stem(x)                                               Conv3x3 in → w0
/// for level l = 1..L−1:  h = down.l(SiLU(GN(h)))            Conv3x3 stride 2, w(l−1) → w(l−1)
///                        h = conv.l(SiLU(GN(h)))            Conv3x3 w(l−1) → w(l)
/// features = GAP(SiLU(tail.norm(h)))                        [N, w(L−1)]
/// logits = head(features)                                   Linear → classes
/// </code>
/// Parameters are initialised like the U-Net's (Xavier-uniform from Philox stream i of the seed, biases 0,
/// GroupNorm γ = 1, β = 0), so the same seed gives the same bits on every accelerator.
/// </summary>
public sealed class Classifier : IDisposable
{
    private readonly ParameterSet parameters;
    private readonly Conv2d stem;
    private readonly (GroupNorm Norm1, Conv2d Down, GroupNorm Norm2, Conv2d Conv)[] levels;
    private readonly GroupNorm tailNorm;
    private readonly Linear head;
    private bool disposed;

    /// <summary>Builds the classifier of <paramref name="config"/> on <paramref name="device"/>, initialised from <paramref name="seed"/>.</summary>
    public Classifier(ComputeDevice device, ClassifierConfig config, ulong seed = 0)
    {
        Config = config.Validate();
        Device = device;
        var w = config.Widths;
        int g = config.Groups;
        stem = new Conv2d("stem", config.InChannels, w[0], 3);
        levels = new (GroupNorm, Conv2d, GroupNorm, Conv2d)[w.Length - 1];
        for (int l = 1; l < w.Length; l++)
            levels[l - 1] = (
                new GroupNorm($"level.{l}.norm1", w[l - 1], g),
                new Conv2d($"level.{l}.down", w[l - 1], w[l - 1], 3, stride: 2),
                new GroupNorm($"level.{l}.norm2", w[l - 1], g),
                new Conv2d($"level.{l}.conv", w[l - 1], w[l], 3));
        tailNorm = new GroupNorm("tail.norm", w[^1], g);
        head = new Linear("head", w[^1], config.Classes);
        // Forward order (the initialisation streams are numbered by it).
        ParameterSpec[] specs = [stem.Weight, stem.Bias,
                 .. levels.SelectMany(v => new[] { v.Norm1.Weight, v.Norm1.Bias, v.Down.Weight, v.Down.Bias, v.Norm2.Weight, v.Norm2.Bias, v.Conv.Weight, v.Conv.Bias }),
                 tailNorm.Weight, tailNorm.Bias, head.Weight, head.Bias];
        parameters = new ParameterSet(device, specs);
        ParameterCount = parameters.Length;
        Initialize(seed);
    }

    /// <summary>The device the parameters live on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The architecture.</summary>
    public ClassifierConfig Config { get; }

    /// <summary>Every parameter, in forward order.</summary>
    public ParameterSet Parameters => parameters;

    /// <summary>Names, shapes and initialisation rules of <see cref="Parameters"/>, same order.</summary>
    public IReadOnlyList<ParameterSpec> Specs => parameters.Specs;

    /// <summary>Total number of trainable values.</summary>
    public long ParameterCount { get; }

    /// <summary>(Re)initialises every parameter from <paramref name="seed"/> (see <see cref="UNet.InitialValues"/>).</summary>
    public void Initialize(ulong seed)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        parameters.Load((i, spec) => UNet.InitialValues(spec, (uint)i, seed));
    }

    /// <summary>The penultimate features: x [N, in, S, S] → [N, <see cref="ClassifierConfig.FeatureDim"/>], tape-owned.</summary>
    public Tensor Features(Tape tape, Tensor x)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var c = Config;
        if (x.Rank != 4 || x.Dim(1) != c.InChannels || x.Dim(2) != c.ImageSize || x.Dim(3) != c.ImageSize)
            throw new ArgumentException($"classifier input {Tensor.ShapeText(x.Shape)} does not match the classifier: expected [N, {c.InChannels}, {c.ImageSize}, {c.ImageSize}]");
        var ops = Ops(tape);
        var h = stem.Forward(ops, x);
        foreach (var (norm1, down, norm2, conv) in levels)
        {
            h = down.Forward(ops, norm1.ForwardActivated(ops, h));
            h = conv.Forward(ops, norm2.ForwardActivated(ops, h));
        }
        return tape.GlobalAveragePool(tailNorm.ForwardActivated(ops, h));
    }

    /// <summary>Class scores from features: [N, FeatureDim] → [N, classes].</summary>
    public Tensor Logits(Tape tape, Tensor features) => head.Forward(Ops(tape), features);

    // The layers' tape ops with this classifier's parameters; SiLU, no timesteps, no dropout.
    private TapeOps Ops(Tape tape) => new(tape, parameters.Get, Activation.Silu, default, 0, default, 0, 0);

    /// <summary>Class scores: x [N, in, S, S] → [N, classes].</summary>
    public Tensor Forward(Tape tape, Tensor x) => Logits(tape, Features(tape, x));

    /// <summary>Sets every parameter's gradient to zero (one memset: <see cref="ParameterSet.ZeroGrad"/>).</summary>
    public void ZeroGrad() => parameters.ZeroGrad();

    /// <summary>Returns the parameters' flat buffers to the pool.</summary>
    public void Dispose()
    {
        disposed = true;
        parameters.Dispose();
    }
}
