using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Bench;

/// <summary>
/// What every benchmark class reads: the device (opened once, shared by all cases, so kernels are compiled
/// once per run), the mode (--quick or full) and the batch. Set by <see cref="Program"/> before BenchmarkDotNet
/// starts; the in-process toolchain runs the benchmarks in this same process, so these statics are visible.
/// </summary>
public static class Settings
{
    private static ComputeDevice? device;

    /// <summary>--quick: few iterations, only the <c>small</c>-preset shapes, a small batch.</summary>
    public static bool Quick { get; set; }

    /// <summary>--batch N, or 0 for the default (see <see cref="Batch"/>).</summary>
    public static int BatchOverride { get; set; }

    /// <summary>The shared device (DDPM_DEVICE, default auto).</summary>
    public static ComputeDevice Device => device ??= ComputeDevice.Open(null);

    /// <summary>
    /// The shared device, made current on the calling thread: BenchmarkDotNet's in-process toolchain runs each
    /// benchmark on its own thread, and a CUDA context is per thread (ILGPU binds on launches and allocations too;
    /// this makes it explicit for everything a setup does).
    /// </summary>
    public static ComputeDevice BindDevice()
    {
        Device.Accelerator.Bind();
        return Device;
    }

    /// <summary>True once <see cref="Device"/> has been opened.</summary>
    public static bool DeviceOpened => device is not null;

    /// <summary>
    /// Images per batch for the network-shaped benchmarks: --batch, else 8 in --quick on the CPU accelerator
    /// (time), 64 in --quick on a GPU (at 8 images every kernel there is launch-bound), 64 in a full run.
    /// </summary>
    public static int Batch => BatchOverride > 0 ? BatchOverride : Quick && Device.IsCpu ? 8 : 64;

    /// <summary>
    /// Kernel launches per measured invocation for the single-kernel benchmarks: 1 on the CPU accelerator,
    /// 10 on a GPU so the one synchronisation per invocation (tens of µs) does not swamp microsecond kernels.
    /// The throughput columns account for it; the Mean and Median columns are per invocation.
    /// </summary>
    public static int Launches => Device.IsCpu ? 1 : 10;

    /// <summary>The presets whose shapes are benchmarked: small at 28×28×1, plus ddpm-cifar10 at 32×32×3 in a full run.</summary>
    public static IEnumerable<string> Presets => Quick ? ["small"] : ["small", "ddpm-cifar10"];

    /// <summary>Closes the device at the end of the run.</summary>
    public static void CloseDevice()
    {
        device?.Dispose();
        device = null;
    }
}
