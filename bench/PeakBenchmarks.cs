using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Peak;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The calibration (DESIGN.md §7): the multiply-add kernel (eight independent chains a ← a·b + c per thread;
/// <see cref="PeakKernels.FlopsPerThread"/> FLOPs a thread) gives the compute peak in GFLOP/s, the copy
/// kernels (one 4-byte read and one 4-byte write per element) the memory peak in GB/s: the better of
/// <see cref="PeakKernels.Copy"/> (one element per thread) and the grid-stride <see cref="ElementwiseKernels.Copy"/>
/// (a few elements per thread on a GPU, thousands on the CPU accelerator, where each simulated thread costs a
/// fraction of a µs of dispatch and the first copy measures that, not memory). Every other benchmark's "% of peak"
/// divides by these figures from the same run.
/// </summary>
[KernelJob]
public class PeakBenchmarks
{
    private ComputeDevice device = null!;
    private PeakKernels kernels = null!;
    private ElementwiseKernels elementwise = null!;
    private DeviceBuffer<float> output = null!, source = null!, destination = null!, gridSource = null!, gridDestination = null!;

    /// <summary>
    /// Threads of the multiply-add kernel: 2^22 on a GPU (≈ 69 GFLOP a launch); 2^12 on the CPU accelerator (≈ 67 MFLOP,
    /// tens of ms there).
    /// </summary>
    public static int MultiplyAddThreads => Settings.Device.IsCpu ? 1 << 12 : 1 << 22;

    /// <summary>
    /// Elements copied: 2^26 floats (256 MiB each way) on a GPU, far beyond its L2; 2^16 on the CPU accelerator, where the
    /// one-element-per-thread copy costs a fraction of a µs an element in ILGPU's per-thread dispatch (not memory), so its
    /// "GB/s" is small there.
    /// </summary>
    public static int CopyElements => Settings.Device.IsCpu ? 1 << 16 : 1 << 26;

    /// <summary>Elements of the grid-stride copy: 2^26 floats on a GPU, 2^22 (16 MiB each way) on the CPU accelerator.</summary>
    public static int GridCopyElements => Settings.Device.IsCpu ? 1 << 22 : 1 << 26;

    /// <summary>One case: the sizes above.</summary>
    public static IEnumerable<BenchCase> Cases() =>
    [
        new SimpleCase($"fma {MultiplyAddThreads >> 10}K thr; copy {CopyElements >> 10}K, {GridCopyElements >> 10}K fl", method => method switch
        {
            nameof(MultiplyAdd) => Work.Compute((double)MultiplyAddThreads * PeakKernels.FlopsPerThread, Settings.Launches),
            nameof(Copy) => Work.Memory(2.0 * sizeof(float) * CopyElements, Settings.Launches),
            _ => Work.Memory(2.0 * sizeof(float) * GridCopyElements, Settings.Launches),
        }),
    ];

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers and compiles the kernels.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<PeakKernels>();
        output = device.Pool.Rent<float>(MultiplyAddThreads);
        source = Fill.Normal(device, CopyElements, 1);
        destination = device.Pool.Rent<float>(CopyElements);
        elementwise = device.Kernels<ElementwiseKernels>();
        gridSource = Fill.Normal(device, GridCopyElements, 2);
        gridDestination = device.Pool.Rent<float>(GridCopyElements);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        output.Dispose();
        source.Dispose();
        destination.Dispose();
        gridSource.Dispose();
        gridDestination.Dispose();
    }

    /// <summary>Compute peak: GFLOP/s of the multiply-add kernel.</summary>
    [Benchmark]
    public void MultiplyAdd()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.MultiplyAdd(output.View, MultiplyAddThreads);
        device.Synchronize();
    }

    /// <summary>Memory peak: GB/s of the copy kernel (read + write).</summary>
    [Benchmark]
    public void Copy()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.Copy(source.View, destination.View);
        device.Synchronize();
    }

    /// <summary>Memory peak, second candidate: GB/s of the grid-stride copy (read + write).</summary>
    [Benchmark]
    public void GridStrideCopy()
    {
        for (int r = 0; r < Settings.Launches; r++) elementwise.Copy(gridSource.View, gridDestination.View);
        device.Synchronize();
    }
}
