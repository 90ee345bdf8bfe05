namespace IlgpuDdpm.Network;

/// <summary>
/// One layer of the U-Net as planned from a config, without a device: its dotted name, kind, input
/// channels (after the skip concat for up-path ResBlocks, of which <c>SkipChannels</c> came from the
/// skip stack), output shape per image ([C, H, W], or [4ch] for the time embedding), parameter specs,
/// forward FLOPs per image (2 × the multiply-adds of its convs, linears and attention matmuls), how
/// many dropout numbers it draws per image, and its one-line description.
/// </summary>
public sealed record LayerInfo(
    string Name, LayerKind Kind, int InChannels, int[] OutputShape, IReadOnlyList<ParameterSpec> Parameters,
    double Flops, long DropoutDrawsPerImage, int SkipChannels, string Description)
{
    /// <summary>Number of trainable values.</summary>
    public long ParameterCount => Parameters.Sum(p => p.Length);
}

/// <summary>
/// The U-Net of a <see cref="UNetConfig"/> as a list of <see cref="LayerInfo"/> in forward order,
/// derived by running the module tree's forward pass (<see cref="UNetModules.Forward{T}"/>) on the
/// shape of one image: nothing is allocated. Each parameter is listed where the pass first reads it,
/// which fixes the UNet's parameter order; a parameter read twice, a skip of the wrong resolution or
/// a layer fed the wrong channels throws.
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
    public static UNetLayout Plan(UNetConfig config) => Plan(new UNetModules(config));

    /// <summary>Plans the module tree <paramref name="modules"/>.</summary>
    public static UNetLayout Plan(UNetModules modules)
    {
        var config = modules.Config;
        var planner = new Planner(config.Activation);
        var output = modules.Forward(planner, [config.InChannels, config.ImageSize, config.ImageSize]);
        if (!output.SequenceEqual([config.InChannels, config.ImageSize, config.ImageSize]))
            throw new InvalidOperationException($"U-Net plan: the output is {Shape(output)}, not the input's shape");
        return new UNetLayout(config, planner.Layers);
    }

    private static string Shape(int[] s) => $"[{string.Join(", ", s)}]";

    /// <summary>
    /// The forward ops on the shape of one image ([C, H, W] or [features]): they check shapes, count
    /// FLOPs and dropout draws and collect the parameters each layer reads.
    /// </summary>
    private sealed class Planner(Activation activation) : IForwardOps<int[]>
    {
        private readonly HashSet<string> names = new();
        private List<ParameterSpec> parameters = new();
        private double flops;
        private long draws;

        public List<LayerInfo> Layers { get; } = new();

        private void Read(ParameterSpec weight, ParameterSpec bias)
        {
            foreach (var p in (ReadOnlySpan<ParameterSpec>)[weight, bias])
            {
                if (!names.Add(p.Name)) throw new InvalidOperationException($"U-Net plan: parameter {p.Name} is read twice");
                parameters.Add(p);
            }
        }

        private static void Expect(bool ok, string what, int[] shape)
        {
            if (!ok) throw new InvalidOperationException($"U-Net plan: {what} got an input of shape {Shape(shape)}");
        }

        public int[] TimestepSinusoid(int dim) => [dim];

        public int[] Conv2d(Conv2d layer, int[] x)
        {
            Expect(x.Length == 3 && x[0] == layer.InChannels, $"{layer.Name} ({layer.InChannels} channels in)", x);
            Read(layer.Weight, layer.Bias);
            int ho = (x[1] + 2 * layer.Padding - layer.Kernel) / layer.Stride + 1, wo = (x[2] + 2 * layer.Padding - layer.Kernel) / layer.Stride + 1;
            flops += 2.0 * layer.OutChannels * layer.InChannels * layer.Kernel * layer.Kernel * ho * wo;
            return [layer.OutChannels, ho, wo];
        }

        public int[] Conv2dAdd(Conv2d layer, int[] x, Func<int[]> addend)
        {
            var y = Conv2d(layer, x);
            var a = addend();
            return a.Length == 1 ? AddChannelVector(y, a) : Add(y, a);
        }

        public int[] Linear(Linear layer, int[] x)
        {
            Expect(x.Length == 1 && x[0] == layer.InFeatures, $"{layer.Name} ({layer.InFeatures} features in)", x);
            Read(layer.Weight, layer.Bias);
            flops += 2.0 * layer.InFeatures * layer.OutFeatures;
            return [layer.OutFeatures];
        }

        public int[] GroupNorm(GroupNorm layer, int[] x)
        {
            Expect(x.Length == 3 && x[0] == layer.Channels, $"{layer.Name} ({layer.Channels} channels)", x);
            Read(layer.Weight, layer.Bias);
            return x;
        }

        public int[] Activate(int[] x) => x;

        public int[] GroupNormActivate(GroupNorm layer, int[] x, float dropout)
        {
            if (dropout > 0f) draws += x.Aggregate(1L, (a, d) => a * d);
            return Activate(GroupNorm(layer, x));
        }

        private static int[] Add(int[] a, int[] b)
        {
            Expect(a.SequenceEqual(b), $"add of {Shape(a)}", b);
            return a;
        }

        private static int[] AddChannelVector(int[] x, int[] v)
        {
            Expect(x.Length == 3 && v.Length == 1 && v[0] == x[0], $"a per-channel add of {Shape(v)}", x);
            return x;
        }

        public int[] Upsample2x(int[] x) => [x[0], 2 * x[1], 2 * x[2]];

        public int[] Concat(int[] a, int[] b)
        {
            Expect(a.Length == 3 && b.Length == 3 && a[1] == b[1] && a[2] == b[2], $"a concat with a skip of {Shape(b)}", a);
            return [a[0] + b[0], a[1], a[2]];
        }

        public int[] Attention(int[] q, int[] k, int[] v)
        {
            Expect(q.SequenceEqual(k) && q.SequenceEqual(v), "attention", q);
            double l = (double)q[1] * q[2];
            flops += 2 * (2.0 * q[0] * l * l); // qᵀk and v·wᵀ
            return q;
        }

        public int[] Layer(UNetLayer layer, int[] output)
        {
            Layers.Add(new LayerInfo(layer.Name, layer.Kind, layer.InChannels, output, parameters, flops, draws,
                                     layer.SkipChannels, layer.Describe(output, activation)));
            parameters = new();
            flops = 0;
            draws = 0;
            return output;
        }
    }
}
