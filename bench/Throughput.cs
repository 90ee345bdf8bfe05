using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace IlgpuDdpm.Bench;

/// <summary>The device's measured peaks in this run: the multiply-add kernel, the better of the two copy kernels.</summary>
public readonly record struct Peaks(double FlopsPerSecond, double BytesPerSecond);

/// <summary>
/// Turns BenchmarkDotNet's mean times into throughput (GFLOP/s, GB/s, images/s) and fractions of the peaks
/// measured in the same run by <see cref="PeakBenchmarks"/>.
/// </summary>
public static class Throughput
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The work of one invocation of a case, or null for a benchmark without a <see cref="BenchCase"/>.</summary>
    public static Work? WorkOf(BenchmarkCase benchmark)
    {
        var c = benchmark.Parameters.Items.Select(p => p.Value).OfType<BenchCase>().FirstOrDefault();
        return c?.WorkOf(benchmark.Descriptor.WorkloadMethod.Name);
    }

    /// <summary>
    /// Median seconds per invocation over the measured iterations (robust to the odd iteration slowed by other
    /// processes), or null when the benchmark failed.
    /// </summary>
    public static double? Seconds(BenchmarkReport? report) =>
        report?.ResultStatistics is { } s && s.N > 0 ? s.Median / 1e9 : null;

    /// <summary>Per-second rate of the work's own kind: FLOP/s, bytes/s or images/s.</summary>
    public static double? Rate(Work work, double seconds) => work.Kind switch
    {
        WorkKind.Compute => work.Flops / seconds,
        WorkKind.Memory => work.Bytes / seconds,
        _ => work.Images / seconds,
    };

    /// <summary>The peaks found among <paramref name="reports"/> (NaN where the peak benchmark did not run).</summary>
    public static Peaks FindPeaks(IEnumerable<BenchmarkReport> reports)
    {
        double flops = double.NaN, bytes = double.NaN;
        foreach (var r in reports)
        {
            if (r.BenchmarkCase.Descriptor.Type != typeof(PeakBenchmarks)) continue;
            if (WorkOf(r.BenchmarkCase) is not { } w || Seconds(r) is not { } s) continue;
            if (w.Kind == WorkKind.Compute) flops = double.IsNaN(flops) ? w.Flops / s : Math.Max(flops, w.Flops / s);
            if (w.Kind == WorkKind.Memory) bytes = double.IsNaN(bytes) ? w.Bytes / s : Math.Max(bytes, w.Bytes / s);
        }
        return new Peaks(flops, bytes);
    }

    /// <summary>
    /// "123.4 GFLOP/s", "56.7 GB/s" or "8.9 img/s" (images: also the GFLOP/s when the FLOPs are known); below 1 G the
    /// rate is shown in M (MFLOP/s, MB/s) so CPU-accelerator figures keep their digits.
    /// </summary>
    public static string FormatRate(Work work, double seconds) => work.Kind switch
    {
        WorkKind.Compute => Scaled(work.Flops / seconds, "FLOP/s"),
        WorkKind.Memory => Scaled(work.Bytes / seconds, "B/s"),
        _ => string.Format(Inv, "{0:F2} img/s", work.Images / seconds)
             + (work.Flops > 0 ? $" ({Scaled(work.Flops / seconds, "FLOP/s")})" : ""),
    };

    /// <summary>A rate in G (≥ 1e9) or M units with three significant digits or more.</summary>
    public static string Scaled(double perSecond, string unit) => perSecond >= 1e9
        ? string.Format(Inv, "{0:F2} G{1}", perSecond / 1e9, unit)
        : string.Format(Inv, "{0:F3} M{1}", perSecond / 1e6, unit);

    /// <summary>
    /// The fraction of the matching peak: FLOP/s over the multiply-add peak for compute work and for whole-network
    /// work with known FLOPs, bytes/s over the copy peak for memory work. NaN when unknown.
    /// </summary>
    public static double FractionOfPeak(Work work, double seconds, Peaks peaks) => work.Kind switch
    {
        WorkKind.Memory => work.Bytes / seconds / peaks.BytesPerSecond,
        _ when work.Flops > 0 => work.Flops / seconds / peaks.FlopsPerSecond,
        _ => double.NaN,
    };

    /// <summary>"12.3 %" or "-".</summary>
    public static string FormatFraction(double fraction) =>
        double.IsNaN(fraction) || double.IsInfinity(fraction) ? "-" : string.Format(Inv, "{0:F1} %", 100 * fraction);

    /// <summary>"1.234 ms" etc.</summary>
    public static string FormatSeconds(double seconds) => seconds switch
    {
        >= 1 => string.Format(Inv, "{0:F3} s", seconds),
        >= 1e-3 => string.Format(Inv, "{0:F3} ms", seconds * 1e3),
        _ => string.Format(Inv, "{0:F2} µs", seconds * 1e6),
    };
}

/// <summary>BenchmarkDotNet column: throughput of the case (GFLOP/s, GB/s or img/s).</summary>
public sealed class ThroughputColumn : IColumn
{
    /// <inheritdoc/>
    public string Id => "IlgpuDdpm.Throughput";
    /// <inheritdoc/>
    public string ColumnName => "Throughput";
    /// <inheritdoc/>
    public bool AlwaysShow => true;
    /// <inheritdoc/>
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc/>
    public int PriorityInCategory => 0;
    /// <inheritdoc/>
    public bool IsNumeric => false;
    /// <inheritdoc/>
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc/>
    public string Legend => "GFLOP/s (compute), GB/s of compulsory traffic (memory) or images/s (network), from the median time and the case's work";

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) =>
        Throughput.WorkOf(benchmarkCase) is { } w && Throughput.Seconds(summary[benchmarkCase]) is { } s ? Throughput.FormatRate(w, s) : "-";

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);
    /// <inheritdoc/>
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    /// <inheritdoc/>
    public bool IsAvailable(Summary summary) => true;
}

/// <summary>BenchmarkDotNet column: the case's throughput as a fraction of the peak measured in the same run.</summary>
public sealed class PeakFractionColumn : IColumn
{
    /// <inheritdoc/>
    public string Id => "IlgpuDdpm.PeakFraction";
    /// <inheritdoc/>
    public string ColumnName => "% of peak";
    /// <inheritdoc/>
    public bool AlwaysShow => true;
    /// <inheritdoc/>
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc/>
    public int PriorityInCategory => 1;
    /// <inheritdoc/>
    public bool IsNumeric => true;
    /// <inheritdoc/>
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc/>
    public string Legend => "throughput / peak measured in this run (Peak.MultiplyAdd GFLOP/s for FLOPs, the better of Peak.Copy and Peak.GridStrideCopy GB/s for bytes)";

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
    {
        if (Throughput.WorkOf(benchmarkCase) is not { } w || Throughput.Seconds(summary[benchmarkCase]) is not { } s) return "-";
        return Throughput.FormatFraction(Throughput.FractionOfPeak(w, s, Throughput.FindPeaks(summary.Reports)));
    }

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);
    /// <inheritdoc/>
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    /// <inheritdoc/>
    public bool IsAvailable(Summary summary) => true;
}

/// <summary>BenchmarkDotNet column: kernel launches per measured invocation.</summary>
public sealed class LaunchesColumn : IColumn
{
    /// <inheritdoc/>
    public string Id => "IlgpuDdpm.Launches";
    /// <inheritdoc/>
    public string ColumnName => "Launches";
    /// <inheritdoc/>
    public bool AlwaysShow => true;
    /// <inheritdoc/>
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc/>
    public int PriorityInCategory => -1;
    /// <inheritdoc/>
    public bool IsNumeric => true;
    /// <inheritdoc/>
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc/>
    public string Legend => "kernel launches (or whole operations) per measured invocation; Mean and Median are per invocation";

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) =>
        Throughput.WorkOf(benchmarkCase) is { } w ? w.Launches.ToString(CultureInfo.InvariantCulture) : "-";

    /// <inheritdoc/>
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);
    /// <inheritdoc/>
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    /// <inheritdoc/>
    public bool IsAvailable(Summary summary) => true;
}
