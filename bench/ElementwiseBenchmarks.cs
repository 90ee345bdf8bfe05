using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;

namespace IlgpuDdpm.Bench;

/// <summary>
/// SiLU, the U-Net's activation, on each preset's largest activation [B, ch, H, W] (level 0). Compulsory traffic,
/// n elements: forward reads x and writes y (8n bytes); backward reads x and dy and adds into dx (read + write: 16n).
/// </summary>
[KernelJob]
public class ElementwiseBenchmarks
{
    private ComputeDevice device = null!;
    private ElementwiseKernels kernels = null!;
    private DeviceBuffer<float> x = null!, y = null!, dy = null!, dx = null!;

    /// <summary>One case per preset: its level-0 activation.</summary>
    public static IEnumerable<BenchCase> Cases() => PresetShape.Active.Select(p =>
    {
        int n = Settings.Batch * p.Channels * p.ImageSize * p.ImageSize;
        return (BenchCase)new SizeCase($"{p.Tag} [{Settings.Batch},{p.Channels},{p.ImageSize},{p.ImageSize}]", n,
            method => Work.Memory((method == nameof(SiluBackward) ? 16.0 : 8.0) * n, Settings.Launches));
    });

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<ElementwiseKernels>();
        int n = ((SizeCase)Case).Size;
        x = Fill.Normal(device, n, 1);
        dy = Fill.Normal(device, n, 2);
        y = device.Pool.Rent<float>(n);
        dx = device.Pool.RentZeroed<float>(n);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        x.Dispose(); y.Dispose(); dy.Dispose(); dx.Dispose();
    }

    /// <summary>y = x·σ(x) (GB/s).</summary>
    [Benchmark]
    public void Silu()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.Silu(x.View, y.View);
        device.Synchronize();
    }

    /// <summary>dx += dy·σ(x)(1 + x(1 − σ(x))) (GB/s).</summary>
    [Benchmark]
    public void SiluBackward()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.SiluBackward(x.View, dy.View, dx.View);
        device.Synchronize();
    }
}
