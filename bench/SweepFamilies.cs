using System.Globalization;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Matmul;
using IlgpuDdpm.Kernels.Norm;

namespace IlgpuDdpm.Bench;

/// <summary>One size of a sweep: the x value plotted and the case the family's benchmark class runs at it.</summary>
public sealed record SweepSize(double X, BenchCase Case);

/// <summary>
/// A kernel family swept over sizes (issue 9 item 5, after Triton's <c>perf_report</c>): the BenchmarkDotNet class
/// whose <c>[Benchmark]</c> methods are timed, what the x axis is, and the sizes. Throughput is GFLOP/s for
/// compute-bound families, GB/s of compulsory traffic for memory-bound ones (<see cref="Work"/>).
/// </summary>
public sealed record SweepFamily(string Name, Type Benchmarks, string XLabel, WorkKind Kind, IReadOnlyList<SweepSize> Sizes)
{
    /// <summary>The families, in the order <c>bench --sweep</c> runs them.</summary>
    public static readonly string[] Names = ["conv", "matmul", "attention", "norm", "elementwise", "optim", "diffusion"];

    /// <summary>
    /// The family named <paramref name="name"/> at this run's sizes: --quick keeps every point's kernel in the
    /// milliseconds on the 2-core CPU accelerator (the whole quick sweep in well under 3 minutes),
    /// a full run adds larger sizes. The batch of the network-shaped families is <see cref="Settings.Batch"/>.
    /// </summary>
    public static SweepFamily Get(string name)
    {
        bool full = !Settings.Quick;
        int b = Settings.Batch;
        static int[] Sizes(bool full, int[] quick, int[] more) => full ? [.. quick, .. more] : quick;
        switch (name)
        {
            case "conv":
                return new(name, typeof(ConvBenchmarks), $"channels C (C -> C, 3x3, 14x14, batch {b})", WorkKind.Compute,
                    [.. Sizes(full, [8, 16, 32, 64, 128], [256, 512]).Select(c =>
                    {
                        var s = new ConvShape(b, c, 14, 14, c, 3);
                        return new SweepSize(c, new ConvBenchmarks.ConvCase($"n{b} {c}->{c} 14x14 k3", s, _ => Work.Compute(s.Flops, Settings.Launches)));
                    })]);
            case "matmul":
                return new(name, typeof(MatmulBenchmarks), "N (square GEMM, M = N = K)", WorkKind.Compute,
                    [.. Sizes(full, [32, 64, 128, 256, 512], [1024, 2048]).Select(n =>
                        new SweepSize(n, new MatmulBenchmarks.GemmCase($"{n}^3", new GemmDims(1, n, n, n))))]);
            case "attention":
                return new(name, typeof(AttentionBenchmarks), $"positions L = side^2 (C 64, batch {b})", WorkKind.Compute,
                    [.. Sizes(full, [4, 7, 10, 14, 20], [28, 40]).Select(side =>
                        new SweepSize(side * side, new AttentionBenchmarks.AttentionCase($"C64 L{side * side} ({side}x{side}) x{b}", 64, side * side)))]);
            case "norm":
                return new(name, typeof(NormBenchmarks), $"floats B*C*H*W (C 64, 8 groups, batch {b})", WorkKind.Memory,
                    [.. Sizes(full, [4, 8, 16, 28, 56], [112, 224]).Select(side =>
                    {
                        var d = new GroupNormDims(b, 64, 8, side * side);
                        double n = d.Length;
                        return new SweepSize(n, new NormBenchmarks.NormCase($"[{b},64,{side}x{side}] G8", d,
                            method => Work.Memory((method == nameof(NormBenchmarks.Backward) ? 16.0 : 8.0) * n, Settings.Launches)));
                    })]);
            case "elementwise":
                return new(name, typeof(ElementwiseBenchmarks), "floats", WorkKind.Memory,
                    [.. Sizes(full, [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22], [1 << 24, 1 << 26]).Select(n =>
                        new SweepSize(n, new SizeCase(Count(n), n,
                            method => Work.Memory((method == nameof(ElementwiseBenchmarks.SiluBackward) ? 16.0 : 8.0) * n, Settings.Launches))))]);
            case "optim":
                return new(name, typeof(OptimBenchmarks), "parameters", WorkKind.Memory,
                    [.. Sizes(full, [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22], [1 << 24, 1 << 26]).Select(n =>
                        new SweepSize(n, new SizeCase($"{Count(n)} params", n, _ => Work.Memory(7.0 * sizeof(float) * n, Settings.Launches))))]);
            case "diffusion":
                return new(name, typeof(DiffusionBenchmarks), $"floats B*H*W (1 channel, batch {b})", WorkKind.Memory,
                    [.. Sizes(full, [8, 16, 32, 64, 128], [256, 512]).Select(side =>
                        new SweepSize((double)b * side * side, new SizeCase($"[{b},1,{side},{side}]", side * side,
                            _ => Work.Memory(3.0 * sizeof(float) * b * side * side, Settings.Launches))))]);
            default:
                throw new ArgumentException($"--family {name}: unknown; expected one of {string.Join(", ", Names)}");
        }
    }

    /// <summary>"4K", "1M" or the plain count.</summary>
    public static string Count(double n) => n switch
    {
        >= 1 << 20 when n % (1 << 20) == 0 => string.Create(CultureInfo.InvariantCulture, $"{n / (1 << 20):0}M"),
        >= 1 << 10 when n % (1 << 10) == 0 => string.Create(CultureInfo.InvariantCulture, $"{n / (1 << 10):0}K"),
        _ => n.ToString("0.###", CultureInfo.InvariantCulture),
    };
}
