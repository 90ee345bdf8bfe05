using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Optim;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The fused Adam(W) update of one parameter tensor. Compulsory
/// traffic: read p, g, m, v and write p, m, v — 7 × 4 bytes per parameter.
/// </summary>
[KernelJob]
public class OptimBenchmarks
{
    private ComputeDevice device = null!;
    private OptimKernels kernels = null!;
    private DeviceBuffer<float> p = null!, g = null!, m = null!, v = null!;
    private AdamStep step;

    /// <summary>
    /// The small preset's largest parameter tensor (an up-path 3×3 conv, 128→64 channels: 73,728 values; the trainer
    /// updates tensor by tensor) and each preset's whole parameter set as one flat buffer.
    /// </summary>
    public static IEnumerable<BenchCase> Cases()
    {
        var cases = new List<(string Name, int Size)> { ("small 128x64x3x3 tensor", 128 * 64 * 3 * 3) };
        cases.AddRange(PresetShape.Active.Select(p => ($"{p.Tag} all {p.ParameterCount / 1e6:F2}M params", p.ParameterCount)));
        return cases.Select(c => (BenchCase)new SizeCase(c.Name, c.Size, _ => Work.Memory(7.0 * sizeof(float) * c.Size, Settings.Launches)));
    }

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<OptimKernels>();
        int n = ((SizeCase)Case).Size;
        p = Fill.Normal(device, n, 1, 0.05f);
        g = Fill.Normal(device, n, 2, 0.01f);
        m = device.Pool.RentZeroed<float>(n);
        v = device.Pool.RentZeroed<float>(n);
        step = new AdamSettings().ForStep(10, 2e-4);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        p.Dispose(); g.Dispose(); m.Dispose(); v.Dispose();
    }

    /// <summary>Adam(W) over all parameters (GB/s).</summary>
    [Benchmark]
    public void Adam()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.Adam(p.View, g.View, m.View, v.View, step);
        device.Synchronize();
    }
}
