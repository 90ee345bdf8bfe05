using IlgpuDdpm.Kernels.Attention;
using IlgpuDdpm.Kernels.Classify;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Matmul;
using IlgpuDdpm.Kernels.Norm;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Kernels.Peak;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Reduce;
using IlgpuDdpm.Kernels.Resample;

namespace IlgpuDdpm.Kernels.Checks;

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
    /// <summary>Every family checked, in order: each family supplies its probes and its tolerance.</summary>
    internal static IReadOnlyList<KernelProbes> All { get; } =
    [
        ConvKernels.Probes, MatmulKernels.Probes, AttentionKernels.Probes, NormKernels.Probes, ReduceKernels.Probes,
        ElementwiseKernels.Probes, ResampleKernels.Probes, RandomKernels.Probes, OptimKernels.Probes,
        DiffusionKernels.Probes, ClassifyKernels.Probes, PeakKernels.Probes,
    ];

    /// <summary>Every family checked, in order, with its tolerance on the relative difference.</summary>
    public static IReadOnlyList<(string Family, double Tolerance)> Families { get; } = [.. All.Select(f => (f.Family, f.Tolerance))];

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
        foreach (var (family, tolerance, probes) in All)
        {
            var mine = probes.Select(probe => Compare(family, probe, device, reference)).ToList();
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

    private static SelfCheckLaunch Compare(string family, KernelProbe probe, ComputeDevice device, ComputeDevice reference)
    {
        float[][] actual, expected;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double seconds;
        try
        {
            actual = ProbeScope.Run(probe, device);
            seconds = clock.Elapsed.TotalSeconds;
        }
        catch (Exception e)
        {
            return new SelfCheckLaunch(family, probe.Name, double.PositiveInfinity, $"failed on {device.Kind}: {FirstLine(e)}");
        }
        try
        {
            clock.Restart();
            expected = ProbeScope.Run(probe, reference);
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

    private static string FirstLine(Exception e)
    {
        var text = e.Message.Split('\n')[0].Trim();
        return $"{e.GetType().Name}: {text}";
    }
}
