using System.Diagnostics;
using System.Reflection;
using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Bench;

/// <summary>One measured point: a family's method at one size.</summary>
public sealed record SweepPoint(string Method, string Case, double X, double Seconds, int Launches, double Rate, double FractionOfPeak);

/// <summary>The device a sweep ran on and the peaks measured in the same run (the plots' horizontal lines).</summary>
public sealed record SweepHeader(string Device, string Kind, int ComputeUnits, string ComputeUnitName, double PeakGflops, double PeakGBs, DateTime Utc, bool Quick, string Host);

/// <summary>A family's sweep: what was plotted and every point, in method then size order.</summary>
public sealed record SweepResult(SweepHeader Header, string Family, string XLabel, WorkKind Kind, IReadOnlyList<SweepPoint> Points)
{
    /// <summary>"GFLOP/s" or "GB/s": the unit of every point's <see cref="SweepPoint.Rate"/>.</summary>
    public string Unit => Kind == WorkKind.Compute ? "GFLOP/s" : "GB/s";

    /// <summary>The measured peak in <see cref="Unit"/>.</summary>
    public double Peak => Kind == WorkKind.Compute ? Header.PeakGflops : Header.PeakGBs;
}

/// <summary>
/// Times the sweep's points without BenchmarkDotNet's per-case pilot and warm-up stages (tens of cases would take
/// far more than the few minutes a --quick sweep may take on the CPU accelerator): like Triton's <c>do_bench</c>,
/// one warm-up call (which also compiles the kernels), then calls until <see cref="MinSeconds"/> have passed and
/// at least <see cref="MinSamples"/> were taken; the median time per call. Each benchmark method ends in a device
/// synchronisation, so a call's wall time is its kernels' time. The classes are driven through the same
/// attributes BenchmarkDotNet uses: <c>[GlobalSetup]</c>, each <c>[Benchmark]</c> method, <c>[GlobalCleanup]</c>.
/// </summary>
public sealed class SweepRunner(double minSeconds, int minSamples, TextWriter log)
{
    /// <summary>Least measuring time per point.</summary>
    public double MinSeconds { get; } = minSeconds;

    /// <summary>Least calls per point.</summary>
    public int MinSamples { get; } = minSamples;

    /// <summary>The header: the device and its peaks from <see cref="PeakBenchmarks"/> (multiply-add; the better of the two copies).</summary>
    public SweepHeader MeasurePeaks(ComputeDevice device)
    {
        var peak = new PeakBenchmarks { Case = PeakBenchmarks.Cases().First() };
        var seconds = Measure(peak, [nameof(PeakBenchmarks.MultiplyAdd), nameof(PeakBenchmarks.Copy), nameof(PeakBenchmarks.GridStrideCopy)]);
        double gflops = peak.Case.WorkOf(nameof(PeakBenchmarks.MultiplyAdd)).Flops / seconds[0] / 1e9;
        double gbs = Math.Max(peak.Case.WorkOf(nameof(PeakBenchmarks.Copy)).Bytes / seconds[1],
                              peak.Case.WorkOf(nameof(PeakBenchmarks.GridStrideCopy)).Bytes / seconds[2]) / 1e9;
        var header = new SweepHeader(device.IsCpu ? "ILGPU CPU accelerator" : device.Accelerator.Name, device.Kind.ToString(),
            device.Accelerator.NumMultiprocessors, device.IsCpu ? "cores" : device.Kind == DeviceKind.Cuda ? "SMs" : "compute units",
            gflops, gbs, DateTime.UtcNow, Settings.Quick,
            $"{Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");
        log.WriteLine($"peaks: {gflops:F2} GFLOP/s multiply-add, {gbs:F2} GB/s copy");
        return header;
    }

    /// <summary>Every method of <paramref name="family"/> at every size.</summary>
    public SweepResult Run(SweepFamily family, SweepHeader header)
    {
        var methods = family.Benchmarks.GetMethods().Where(m => m.GetCustomAttribute<BenchmarkAttribute>() is not null).Select(m => m.Name).ToArray();
        var points = new List<(int Method, SweepPoint Point)>();
        foreach (var size in family.Sizes)
        {
            var benchmark = Activator.CreateInstance(family.Benchmarks)!;
            family.Benchmarks.GetProperty("Case")!.SetValue(benchmark, size.Case);
            var seconds = Measure(benchmark, methods);
            for (int m = 0; m < methods.Length; m++)
            {
                var work = size.Case.WorkOf(methods[m]);
                double rate = (family.Kind == WorkKind.Compute ? work.Flops : work.Bytes) / seconds[m] / 1e9;
                double peak = family.Kind == WorkKind.Compute ? header.PeakGflops : header.PeakGBs;
                var point = new SweepPoint(methods[m], size.Case.Name, size.X, seconds[m], work.Launches, rate, rate / peak);
                points.Add((m, point));
                log.WriteLine($"  {family.Name}.{methods[m]} {size.Case.Name}: {Throughput.FormatSeconds(seconds[m])}, {rate:F3} {(family.Kind == WorkKind.Compute ? "GFLOP/s" : "GB/s")} ({100 * rate / peak:F1} % of peak)");
            }
        }
        return new SweepResult(header, family.Name, family.XLabel, family.Kind, [.. points.OrderBy(p => p.Method).Select(p => p.Point)]);
    }

    /// <summary>Median seconds per call of each of <paramref name="methods"/> on one set-up instance.</summary>
    private double[] Measure(object benchmark, string[] methods)
    {
        var type = benchmark.GetType();
        Invoke<GlobalSetupAttribute>(type, benchmark);
        try
        {
            return [.. methods.Select(name =>
            {
                var call = type.GetMethod(name)!.CreateDelegate<Action>(benchmark);
                call(); // warm-up: compiles the kernels, touches the buffers
                var samples = new List<double>();
                var total = Stopwatch.StartNew();
                while (samples.Count < MinSamples || total.Elapsed.TotalSeconds < MinSeconds)
                {
                    long start = Stopwatch.GetTimestamp();
                    call();
                    samples.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                    if (samples.Count >= 10_000) break;
                }
                samples.Sort();
                return samples[samples.Count / 2];
            })];
        }
        finally
        {
            Invoke<GlobalCleanupAttribute>(type, benchmark);
        }
    }

    private static void Invoke<TAttribute>(Type type, object instance) where TAttribute : Attribute
    {
        foreach (var method in type.GetMethods().Where(m => m.GetCustomAttribute<TAttribute>() is not null))
            method.Invoke(instance, null);
    }
}
