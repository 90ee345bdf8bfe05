using IlgpuDdpm.Kernels.Attention;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Matmul;
using IlgpuDdpm.Kernels.Norm;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Kernels.Peak;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Reduce;
using IlgpuDdpm.Kernels.Resample;

namespace IlgpuDdpm.Kernels.Device;

/// <summary>One launch of <see cref="SelfCheck"/>: its largest relative difference, or the error it raised.</summary>
/// <param name="Family">Kernel family.</param>
/// <param name="Name">What was launched, with its shape.</param>
/// <param name="RelativeDifference">Largest relative difference over its outputs (+∞ on an error or a non-finite value).</param>
/// <param name="Error">The exception message when the launch failed on either device.</param>
/// <param name="Seconds">Wall time of the probe on the device under test and on the reference (compilation included on first use).</param>
public sealed record SelfCheckLaunch(string Family, string Name, double RelativeDifference, string? Error = null, double Seconds = 0, double ReferenceSeconds = 0);

/// <summary>One kernel family's verdict.</summary>
/// <param name="Family">Kernel family.</param>
/// <param name="Launches">Launches compared.</param>
/// <param name="MaxRelativeDifference">Largest relative difference over them.</param>
/// <param name="Tolerance">The family's tolerance.</param>
/// <param name="WorstLaunch">The launch with the largest difference (and its error, if any).</param>
public sealed record SelfCheckFamily(string Family, int Launches, double MaxRelativeDifference, double Tolerance, string WorstLaunch)
{
    /// <summary>True when every launch stayed within the tolerance.</summary>
    public bool Passed => MaxRelativeDifference <= Tolerance;
}

/// <summary>What <see cref="SelfCheck.Run"/> found.</summary>
public sealed record SelfCheckReport(IReadOnlyList<SelfCheckFamily> Families, IReadOnlyList<SelfCheckLaunch> Launches)
{
    /// <summary>True when every family passed.</summary>
    public bool Passed => Families.All(f => f.Passed);
}

/// <summary>
/// The accelerator self-check behind <c>ddpm selfcheck</c>: every kernel family runs representative launches
/// — shapes like the U-Net's, and shapes that are not multiples of any tile — on the device under test and
/// on a reference device (the CPU accelerator) with identical inputs: the same host data and the same
/// Philox keys. Each output is compared as <c>max_i |a_i − b_i| / max_i |b_i|</c> (the difference relative to
/// the output's magnitude, so tiny entries near zero do not inflate it), and a family passes when its
/// largest difference stays within its tolerance. Tolerances allow for a different summation order (GPU
/// tiles and trees vs the CPU's per-thread loops) and for the GPU's approximate transcendental functions;
/// a wrong index, a race or a missing barrier gives differences of order one. When both devices are the
/// same, every launch runs twice and must agree bit for bit (the kernels are deterministic).
/// </summary>
public static class SelfCheck
{
    /// <summary>Every family checked, in order, with its tolerance on the relative difference.</summary>
    public static IReadOnlyList<(string Family, double Tolerance)> Families { get; } =
    [
        // A wrong index, a race or a missing barrier gives differences of order 1; these tolerances only
        // have to absorb rounding, so they are set a decade or two above what the arithmetic can explain.
        ("Conv", 1e-4),        // sums over Cin·K² in another order (GPU tiles vs CPU blocks), FMA contraction
        ("Matmul", 1e-4),      // sums over K in another order
        ("Attention", 1e-4),   // softmax rows: exp is approximate on GPUs; backward row sums
        ("Norm", 1e-4),        // two-pass statistics and backward sums: order differs (tree vs loop)
        ("Reduce", 1e-4),      // sums of 10^5 positive values in another order (two-stage tree vs loop)
        ("Elementwise", 1e-3), // SiLU's exp; sin/cos of t·f up to ~1000 rad in the timestep sinusoid, where GPU
                               // sine/cosine lose accuracy with the size of the argument
        ("Resample", 1e-6),    // copies and 4-term sums in the same order
        ("Random", 1e-3),      // Philox bits are exact, but Box–Muller's √(−2 ln u) for u within a few ulps of 1
                               // magnifies the GPU log's absolute error (up to ~1e-4 of the largest |z|)
        ("Optim", 1e-4),       // Adam's sqrt and divide, a few ulps; norms are positive sums in another order
        ("Diffusion", 1e-3),   // Box–Muller noise as in Random; exp/log in the KL and the decoder's CDF differences
        ("Peak", 1e-4),        // multiply-add chains of 1024 steps: the GPU contracts to FMA (one rounding fewer each)
    ];

    /// <summary>
    /// Runs every family on <paramref name="device"/> and on <paramref name="reference"/>, calling
    /// <paramref name="onFamily"/> as each family finishes. Launch failures are reported, not thrown.
    /// </summary>
    public static SelfCheckReport Run(ComputeDevice device, ComputeDevice reference, Action<SelfCheckFamily>? onFamily = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(reference);
        var families = new List<SelfCheckFamily>();
        var launches = new List<SelfCheckLaunch>();
        foreach (var (family, tolerance) in Families)
        {
            var mine = new List<SelfCheckLaunch>();
            foreach (var probe in Probes(family))
                mine.Add(Compare(family, probe, device, reference));
            launches.AddRange(mine);
            var worst = mine.OrderByDescending(l => double.IsNaN(l.RelativeDifference) ? double.PositiveInfinity : l.RelativeDifference).First();
            var result = new SelfCheckFamily(family, mine.Count, worst.RelativeDifference, tolerance,
                worst.Error is null ? worst.Name : $"{worst.Name}: {worst.Error}");
            families.Add(result);
            onFamily?.Invoke(result);
        }
        return new SelfCheckReport(families, launches);
    }

    /// <summary>
    /// max_i |actual_i − expected_i| / max_i |expected_i| (the absolute difference when expected is all zero);
    /// +∞ when the lengths differ or a value is not finite on one side only.
    /// </summary>
    public static double RelativeDifference(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length) return double.PositiveInfinity;
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            float a = actual[i], e = expected[i];
            if (!float.IsFinite(a) || !float.IsFinite(e))
            {
                if (BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(e)) continue;
                return double.PositiveInfinity;
            }
            maxDiff = Math.Max(maxDiff, Math.Abs((double)a - e));
            maxRef = Math.Max(maxRef, Math.Abs((double)e));
        }
        return maxRef > 0 ? maxDiff / maxRef : maxDiff;
    }

    private static SelfCheckLaunch Compare(string family, Probe probe, ComputeDevice device, ComputeDevice reference)
    {
        float[][] actual, expected;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double seconds;
        try
        {
            actual = RunProbe(probe, device);
            seconds = clock.Elapsed.TotalSeconds;
        }
        catch (Exception e)
        {
            return new SelfCheckLaunch(family, probe.Name, double.PositiveInfinity, $"failed on {device.Kind}: {FirstLine(e)}");
        }
        try
        {
            clock.Restart();
            expected = RunProbe(probe, reference);
        }
        catch (Exception e)
        {
            return new SelfCheckLaunch(family, probe.Name, double.PositiveInfinity, $"failed on the reference {reference.Kind}: {FirstLine(e)}");
        }
        if (actual.Length != expected.Length)
            return new SelfCheckLaunch(family, probe.Name, double.PositiveInfinity, "different number of outputs");
        double worst = 0;
        for (int k = 0; k < actual.Length; k++)
            worst = Math.Max(worst, RelativeDifference(actual[k], expected[k]));
        return new SelfCheckLaunch(family, probe.Name, worst, null, seconds, clock.Elapsed.TotalSeconds);
    }

    private static float[][] RunProbe(Probe probe, ComputeDevice device)
    {
        using var scope = new Scope(device);
        var outputs = probe.Run(scope);
        device.Synchronize();
        return outputs;
    }

    private static string FirstLine(Exception e)
    {
        var text = e.Message.Split('\n')[0].Trim();
        return $"{e.GetType().Name}: {text}";
    }

    // ------------------------------------------------------------------ probes

    private sealed record Probe(string Name, Func<Scope, float[][]> Run);

    private static IEnumerable<Probe> Probes(string family) => family switch
    {
        "Conv" => ConvProbes(),
        "Matmul" => MatmulProbes(),
        "Attention" => AttentionProbes(),
        "Norm" => NormProbes(),
        "Reduce" => ReduceProbes(),
        "Elementwise" => ElementwiseProbes(),
        "Resample" => ResampleProbes(),
        "Random" => RandomProbes(),
        "Optim" => OptimProbes(),
        "Diffusion" => DiffusionProbes(),
        "Peak" => PeakProbes(),
        _ => throw new InvalidOperationException($"no probes for kernel family {family}"),
    };

    private static IEnumerable<Probe> ConvProbes()
    {
        // The U-Net's convolutions: 3×3 "same", 3×3 stride 2 (Downsample), 1×1 (skip and attention
        // projections), at sizes that are and are not multiples of 4 and of the GPU tiles.
        var shapes = new[]
        {
            new ConvShape(2, 16, 8, 8, 16, 3),
            new ConvShape(2, 3, 9, 7, 5, 3),
            new ConvShape(2, 32, 14, 14, 32, 3, stride: 2),
            new ConvShape(1, 48, 7, 7, 32, 1),
            new ConvShape(2, 64, 16, 16, 64, 3),
        };
        foreach (var shape in shapes)
        {
            yield return new Probe($"Conv forward+backward {shape}", k =>
            {
                var conv = k.Device.Kernels<ConvKernels>();
                var x = k.Upload(Data(shape.InputLength, 81, -1f, 1f));
                var w = k.Upload(Data(shape.WeightLength, 82, -0.3f, 0.3f));
                var b = k.Upload(Data(shape.Cout, 83, -0.5f, 0.5f));
                var y = k.Zeros(shape.OutputLength);
                conv.Forward(x.View, w.View, b.View, y.View, shape);
                var dy = k.Upload(Data(shape.OutputLength, 84, -1f, 1f));
                var dx = k.Upload(Data(shape.InputLength, 85, -1f, 1f)); // backward kernels add into their outputs
                var dw = k.Upload(Data(shape.WeightLength, 86, -1f, 1f));
                var db = k.Upload(Data(shape.Cout, 87, -1f, 1f));
                conv.BackwardInput(dy.View, w.View, dx.View, shape);
                conv.BackwardWeight(x.View, dy.View, dw.View, shape);
                conv.BackwardBias(dy.View, db.View, shape);
                return [y.ToArray(), dx.ToArray(), dw.ToArray(), db.ToArray()];
            });
        }
    }

    private static IEnumerable<Probe> MatmulProbes()
    {
        // Plain and transposed operands (the backward passes), batched (attention), accumulating (gradients).
        var cases = new[]
        {
            (new GemmDims(1, 70, 50, 90), false),
            (new GemmDims(1, 64, 128, 64, TransposeA: true), false),
            (new GemmDims(1, 33, 65, 129, TransposeB: true), true),
            (new GemmDims(3, 49, 49, 32, TransposeA: true, TransposeB: true), true),
            (new GemmDims(2, 196, 196, 32, TransposeA: true), false),
        };
        foreach (var (dims, accumulate) in cases)
        {
            yield return new Probe($"Gemm {dims}{(accumulate ? " accumulate" : "")}", k =>
            {
                var matmul = k.Device.Kernels<MatmulKernels>();
                var a = k.Upload(Data(dims.Batch * dims.M * dims.K, 91, -1f, 1f));
                var b = k.Upload(Data(dims.Batch * dims.K * dims.N, 92, -1f, 1f));
                var c = k.Upload(Data(dims.Batch * dims.M * dims.N, 93, -1f, 1f));
                matmul.Gemm(a.View, b.View, c.View, dims, alpha: 0.75f, accumulate: accumulate);
                return [c.ToArray()];
            });
        }
        yield return new Probe("GemmBias (Linear 37×64 → 256) and BiasBackward", k =>
        {
            var matmul = k.Device.Kernels<MatmulKernels>();
            var dims = new GemmDims(1, 37, 256, 64, TransposeB: true);
            var x = k.Upload(Data(37 * 64, 94, -1f, 1f));
            var w = k.Upload(Data(256 * 64, 95, -0.2f, 0.2f));
            var bias = k.Upload(Data(256, 96, -1f, 1f));
            var y = k.Zeros(37 * 256);
            matmul.GemmBias(x.View, w.View, bias.View, y.View, dims);
            var db = k.Upload(Data(256, 97, -1f, 1f));
            matmul.BiasBackward(y.View, db.View, 37, 256);
            return [y.ToArray(), db.ToArray()];
        });
    }

    private static IEnumerable<Probe> AttentionProbes()
    {
        foreach (var (rows, cols) in new[] { (196, 196), (64, 49), (5, 1000) })
        {
            yield return new Probe($"Softmax forward+backward [{rows},{cols}]", k =>
            {
                var attention = k.Device.Kernels<AttentionKernels>();
                var x = k.Upload(Data(rows * cols, 101, -8f, 8f));
                var y = k.Zeros(rows * cols);
                attention.SoftmaxForward(x.View, y.View, rows, cols);
                var dy = k.Upload(Data(rows * cols, 102, -1f, 1f));
                var dx = k.Upload(Data(rows * cols, 103, -1e-3f, 1e-3f));
                attention.SoftmaxBackward(y.View, dy.View, dx.View, rows, cols);
                return [y.ToArray(), dx.ToArray()];
            });
        }
    }

    private static IEnumerable<Probe> NormProbes()
    {
        // (N, C, G, H·W): a tiny preset block, a shape off every power of two, and a long group (GPU tree loops).
        foreach (var (n, c, g, s) in new[] { (2, 16, 4, 8 * 8), (3, 12, 4, 7 * 9), (2, 64, 8, 33 * 33) })
        {
            var dims = new GroupNormDims(n, c, g, s);
            int len = dims.Length;
            yield return new Probe($"GroupNorm forward+backward [{n},{c},{s}] G={g}", k =>
            {
                var norm = k.Device.Kernels<NormKernels>();
                var x = k.Upload(Data(len, 11, -2f, 3f));
                var gamma = k.Upload(Data(c, 12, 0.5f, 1.5f));
                var beta = k.Upload(Data(c, 13, -0.5f, 0.5f));
                var y = k.Zeros(len);
                var mean = k.Zeros(dims.StatCount);
                var rstd = k.Zeros(dims.StatCount);
                norm.Forward(x.View, gamma.View, beta.View, y.View, mean.View, rstd.View, dims);
                var dy = k.Upload(Data(len, 14, -1f, 1f));
                var dx = k.Zeros(len);
                var dgamma = k.Zeros(c);
                var dbeta = k.Zeros(c);
                norm.Backward(x.View, gamma.View, mean.View, rstd.View, dy.View, dx.View, dgamma.View, dbeta.View, dims);
                return [y.ToArray(), mean.ToArray(), rstd.ToArray(), dx.ToArray(), dgamma.ToArray(), dbeta.ToArray()];
            });
        }
    }

    private static IEnumerable<Probe> ReduceProbes()
    {
        foreach (int n in new[] { 1000, 4096 * 3 + 17, 100_003 })
        {
            yield return new Probe($"Sum, SumOfSquaredDifferences n={n}", k =>
            {
                var reduce = k.Device.Kernels<ReduceKernels>();
                var a = k.Upload(Data(n, 21, 0f, 1f));
                var b = k.Upload(Data(n, 22, -1f, 1f));
                var sum = k.Zeros(1);
                var ssd = k.Zeros(1);
                reduce.Sum(a.View, sum.View, 1f / n);
                reduce.SumOfSquaredDifferences(a.View, b.View, ssd.View, 1f / n);
                return [sum.ToArray(), ssd.ToArray()];
            });
        }
        yield return new Probe("SumBackward, SumOfSquaredDifferencesBackward n=5003", k =>
        {
            const int n = 5003;
            var reduce = k.Device.Kernels<ReduceKernels>();
            var a = k.Upload(Data(n, 23, -1f, 1f));
            var b = k.Upload(Data(n, 24, -1f, 1f));
            var dloss = k.Upload([0.75f]);
            var dx = k.Upload(Data(n, 25, -1f, 1f)); // backward kernels add into their outputs
            var da = k.Zeros(n);
            var db = k.Zeros(n);
            reduce.SumBackward(dloss.View, dx.View, 0.5f);
            reduce.SumOfSquaredDifferencesBackward(a.View, b.View, dloss.View, da.View, 1f / n);
            reduce.SumOfSquaredDifferencesBackward(a.View, b.View, dloss.View, db.View, 1f / n, withRespectToB: true);
            return [dx.ToArray(), da.ToArray(), db.ToArray()];
        });
    }

    private static IEnumerable<Probe> ElementwiseProbes()
    {
        foreach (var (n, c, s) in new[] { (2, 16, 8 * 8), (3, 5, 7 * 9) })
        {
            int len = n * c * s;
            yield return new Probe($"SiLU, Add, Scale, AddChannelVector, Concat, Dropout (and backward) [{n},{c},{s}]", k =>
            {
                var e = k.Device.Kernels<ElementwiseKernels>();
                var x = k.Upload(Data(len, 61, -6f, 6f));
                var b = k.Upload(Data(len, 62, -1f, 1f));
                var dy = k.Upload(Data(len, 63, -1f, 1f));
                var v = k.Upload(Data(n * c, 64, -1f, 1f));
                var silu = k.Zeros(len);
                var dsilu = k.Upload(Data(len, 65, -1f, 1f)); // backward kernels add into their outputs
                e.Silu(x.View, silu.View);
                e.SiluBackward(x.View, dy.View, dsilu.View);
                var sum = k.Zeros(len);
                e.Add(x.View, b.View, sum.View);
                e.AddScaledInto(sum.View, dy.View, -0.37f);
                var scaled = k.Zeros(len);
                e.Scale(x.View, scaled.View, 1.25f);
                var biased = k.Zeros(len);
                var dx = k.Zeros(len);
                var dv = k.Zeros(n * c);
                e.AddChannelVector(x.View, v.View, biased.View, n, c, s);
                e.AddChannelVectorBackward(dy.View, dx.View, dv.View, n, c, s);
                var cat = k.Zeros(2 * len);
                var da = k.Zeros(len);
                var db = k.Zeros(len);
                e.Concat(x.View, b.View, cat.View, n, c, c, s);
                e.ConcatBackward(cat.View, da.View, db.View, n, c, c, s);
                var dropped = k.Zeros(len);
                var ddrop = k.Zeros(len);
                var key = new PhiloxKey(77, 3, 11);
                e.Dropout(x.View, dropped.View, 0.1f, key);
                e.DropoutBackward(dy.View, ddrop.View, 0.1f, key);
                return [silu.ToArray(), dsilu.ToArray(), sum.ToArray(), scaled.ToArray(), biased.ToArray(), dx.ToArray(), dv.ToArray(),
                        cat.ToArray(), da.ToArray(), db.ToArray(), dropped.ToArray(), ddrop.ToArray()];
            });
        }
        foreach (int dim in new[] { 16, 128 })
        {
            yield return new Probe($"TimestepSinusoid dim={dim}, t in 0..999", k =>
            {
                var e = k.Device.Kernels<ElementwiseKernels>();
                int[] steps = [0, 1, 2, 17, 250, 499, 500, 998, 999];
                using var t = k.Device.Pool.Rent<int>(steps.Length);
                t.CopyFrom(steps);
                var output = k.Zeros(steps.Length * dim);
                e.TimestepSinusoid(t.View, output.View, steps.Length, dim);
                return [output.ToArray()];
            });
        }
    }

    private static IEnumerable<Probe> ResampleProbes()
    {
        foreach (var (n, c, h, w) in new[] { (2, 32, 7, 7), (1, 3, 5, 9), (2, 64, 16, 16) })
        {
            yield return new Probe($"Upsample2x and backward [{n},{c},{h},{w}]", k =>
            {
                var r = k.Device.Kernels<ResampleKernels>();
                int len = n * c * h * w;
                var x = k.Upload(Data(len, 71, -1f, 1f));
                var y = k.Zeros(4 * len);
                r.Upsample2x(x.View, y.View, n, c, h, w);
                var dy = k.Upload(Data(4 * len, 72, -1f, 1f));
                var dx = k.Upload(Data(len, 73, -1f, 1f));
                r.Upsample2xBackward(dy.View, dx.View, n, c, h, w);
                return [y.ToArray(), dx.ToArray()];
            });
        }
    }

    private static IEnumerable<Probe> RandomProbes()
    {
        foreach (var (n, offset) in new[] { (1000, 0UL), (4099, 3UL), (65_536, 1UL << 33) })
        {
            yield return new Probe($"Uniform, Normal, Integers n={n} offset={offset}", k =>
            {
                var random = k.Device.Kernels<RandomKernels>();
                var key = new PhiloxKey(0x1234_5678_9ABCUL, 7, offset);
                var u = k.Zeros(n);
                var z = k.Zeros(n);
                using var ints = k.Device.Pool.Rent<int>(n);
                random.Uniform(u.View, key);
                random.Normal(z.View, key.Advance(n));
                random.Integers(ints.View, key with { Stream = 8 }, 1000);
                return [u.ToArray(), z.ToArray(), Array.ConvertAll(ints.ToArray(), v => (float)v)];
            });
        }
    }

    private static IEnumerable<Probe> OptimProbes()
    {
        foreach (int n in new[] { 1000, 10_007 })
        {
            yield return new Probe($"Adam (plain and clip-scaled), EMA n={n}", k =>
            {
                var optim = k.Device.Kernels<OptimKernels>();
                var p = k.Upload(Data(n, 31, -1f, 1f));
                var g = k.Upload(Data(n, 32, -0.1f, 0.1f));
                var m = k.Upload(Data(n, 33, -0.01f, 0.01f));
                var v = k.Upload(Data(n, 34, 0f, 1e-3f));
                var step = new AdamSettings { WeightDecay = 0.01f }.ForStep(3, 2e-4);
                optim.Adam(p.View, g.View, m.View, v.View, step);
                var scale = k.Upload([1.7f, 0.4f]);
                optim.Adam(p.View, g.View, m.View, v.View, new AdamSettings().ForStep(4, 1e-3), scale.View, 1);
                var ema = k.Upload(Data(n, 35, -1f, 1f));
                optim.Ema(ema.View, p.View, 0.999f);
                return [p.ToArray(), m.ToArray(), v.ToArray(), ema.ToArray()];
            });
        }
        yield return new Probe("global-norm clipping over 3 tensors (SumOfSquares, ClipScale, scale)", k =>
        {
            var optim = k.Device.Kernels<OptimKernels>();
            var a = k.Upload(Data(70_001, 36, -1f, 1f));
            var b = k.Upload(Data(257, 37, -1f, 1f));
            var c = k.Upload(Data(3, 38, -1f, 1f));
            var partials = k.Zeros(3);
            var normAndScale = k.Zeros(2);
            optim.ClipGlobalNorm([a.View, b.View, c.View], 1f, partials.View, normAndScale.View);
            return [partials.ToArray(), normAndScale.ToArray(), a.ToArray(), b.ToArray(), c.ToArray()];
        });
    }

    private static IEnumerable<Probe> DiffusionProbes()
    {
        const int T = 1000;
        var betas = new double[T];
        for (int i = 0; i < T; i++) betas[i] = 1e-4 + (0.02 - 1e-4) * i / (T - 1);
        var sqrtAlphaBar = new float[T];
        var sqrtOneMinusAlphaBar = new float[T];
        double alphaBar = 1;
        for (int i = 0; i < T; i++)
        {
            alphaBar *= 1 - betas[i];
            sqrtAlphaBar[i] = (float)Math.Sqrt(alphaBar);
            sqrtOneMinusAlphaBar[i] = (float)Math.Sqrt(1 - alphaBar);
        }
        double lastAlphaBar = alphaBar;
        const int n = 4, d = 3 * 10 * 10;
        var key = new PhiloxKey(99, 3, 5);

        yield return new Probe($"Noise n={n} d={d}", k =>
        {
            var kernels = k.Device.Kernels<DiffusionKernels>();
            var x0 = k.Upload(Data(n * d, 41, -1f, 1f));
            using var t = k.Device.Pool.Rent<int>(n);
            t.CopyFrom([0, 17, 500, 999]);
            var sa = k.Upload(sqrtAlphaBar);
            var sb = k.Upload(sqrtOneMinusAlphaBar);
            var eps = k.Zeros(n * d);
            var xt = k.Zeros(n * d);
            kernels.Noise(x0.View, t.View, sa.View, sb.View, key, eps.View, xt.View, n, d);
            return [eps.ToArray(), xt.ToArray()];
        });
        // The reverse step of every sampler: x̂0 = clip?(P·x_t − Q·ε̂), x_prev = A·x̂0 + B·x_t + σ·z (coefficients
        // of the DDPM step at t = 999 and t = 500 and of a DDIM step; the samplers compute them in src/Diffusion).
        foreach (var (p, q, a, b, sigma, clip) in new[] { (158.2, 158.2, 1.3e-4, 0.99, 0.14, true), (1.7, 1.4, 0.05, 0.97, 0.0, false), (3.1, 2.9, 0.4, 0.31, 0.2, true) })
        {
            yield return new Probe($"ReverseStep P={p} Q={q} A={a} B={b} σ={sigma} clip={clip}", k =>
            {
                var kernels = k.Device.Kernels<DiffusionKernels>();
                var xt = k.Upload(Data(n * d, 42, -3f, 3f));
                var eps = k.Upload(Data(n * d, 43, -2f, 2f));
                var next = k.Zeros(n * d);
                kernels.ReverseStep(xt.View, eps.View, new ReverseStepCoefficients(p, q, a, b, sigma, clip), key, next.View);
                return [next.ToArray()];
            });
        }
        yield return new Probe($"GaussianKL, PriorKL, DiscretizedGaussianNll n={n} d={d}", k =>
        {
            var kernels = k.Device.Kernels<DiffusionKernels>();
            var m1 = k.Upload(Data(n * d, 47, -1f, 1f));
            var m2 = k.Upload(Data(n * d, 48, -1f, 1f));
            // x0 on the 256 levels of 8-bit data, as the decoder expects.
            var levels = Data(n * d, 49, 0f, 256f);
            for (int i = 0; i < levels.Length; i++) levels[i] = Math.Min(255f, MathF.Floor(levels[i])) / 127.5f - 1f;
            var x0 = k.Upload(levels);
            var means = k.Upload(Data(n * d, 50, -1f, 1f));
            float scale = (float)(1 / (d * Math.Log(2)));
            var kl = k.Zeros(n);
            var prior = k.Zeros(n);
            var nll = k.Zeros(n);
            kernels.GaussianKL(m1.View, -4.5f, m2.View, -4.2f, kl.View, n, d, scale);
            kernels.PriorKL(x0.View, lastAlphaBar, prior.View, n, d, scale);
            kernels.DiscretizedGaussianNll(x0.View, means.View, -6f, nll.View, n, d, scale);
            return [kl.ToArray(), prior.ToArray(), nll.ToArray()];
        });
    }

    private static IEnumerable<Probe> PeakProbes()
    {
        yield return new Probe("MultiplyAdd 4096 threads", k =>
        {
            var peak = k.Device.Kernels<PeakKernels>();
            var output = k.Zeros(4096);
            peak.MultiplyAdd(output.View, 4096);
            return [output.ToArray()];
        });
        yield return new Probe("Copy n=100003", k =>
        {
            var peak = k.Device.Kernels<PeakKernels>();
            var source = k.Upload(Data(100_003, 51, -1f, 1f));
            var destination = k.Zeros(100_003);
            peak.Copy(source.View, destination.View);
            return [destination.ToArray()];
        });
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>
    /// n host values uniform in [lo, hi) from Philox (stream 0x5E1F, the given seed): the same numbers for
    /// every device and every run.
    /// </summary>
    internal static float[] Data(int n, ulong seed, float lo, float hi)
    {
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = lo + (hi - lo) * Philox.Uniform(seed, 0x5E1F, (ulong)i);
        return data;
    }

    /// <summary>Device buffers of one probe run, returned to the pool at the end.</summary>
    private sealed class Scope(ComputeDevice device) : IDisposable
    {
        private readonly List<IDisposable> rented = [];

        public ComputeDevice Device { get; } = device;

        public DeviceBuffer<float> Upload(float[] data)
        {
            var buffer = Device.Pool.Rent<float>(data.Length);
            rented.Add(buffer);
            buffer.CopyFrom(data);
            return buffer;
        }

        public DeviceBuffer<float> Zeros(int n)
        {
            var buffer = Device.Pool.RentZeroed<float>(n);
            rented.Add(buffer);
            return buffer;
        }

        public void Dispose()
        {
            Device.Synchronize();
            foreach (var b in rented) b.Dispose();
        }
    }
}
