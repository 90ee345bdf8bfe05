using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Norm;

namespace IlgpuDdpm.Bench;

/// <summary>
/// Group normalisation at the activations of each U-Net level, x [B, C, H·W] with the preset's group count.
/// Compulsory traffic, n = B·C·H·W: forward reads x and writes y (8n bytes; the statistics pass reads x once more,
/// not counted); backward reads x and dy and adds into dx (read + write: 16n bytes). γ, β, their gradients and the
/// [B·G] statistics are negligible and not counted.
/// </summary>
[KernelJob]
public class NormBenchmarks
{
    private ComputeDevice device = null!;
    private NormKernels kernels = null!;
    private DeviceBuffer<float> x = null!, y = null!, gamma = null!, beta = null!, mean = null!, rstd = null!, dy = null!, dx = null!, dgamma = null!, dbeta = null!;
    private GroupNormDims dims;

    /// <summary>One case per level of each preset: [B, C, S] with S = H·W.</summary>
    public static IEnumerable<BenchCase> Cases() => PresetShape.Active.SelectMany(p => p.Levels.Select(level =>
    {
        var d = new GroupNormDims(Settings.Batch, level.Channels, p.Groups, level.Resolution * level.Resolution);
        double n = d.Length;
        return (BenchCase)new NormCase($"{p.Tag} [{d.N},{d.C},{level.Resolution}x{level.Resolution}] G{d.Groups}", d,
            method => Work.Memory((method == nameof(Backward) ? 16.0 : 8.0) * n, Settings.Launches));
    }));

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers; one forward pass fills the statistics the backward reads.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<NormKernels>();
        dims = ((NormCase)Case).Dims;
        x = Fill.Normal(device, dims.Length, 1);
        dy = Fill.Normal(device, dims.Length, 2);
        gamma = Fill.Uniform(device, dims.C, 3, 0.5f, 1.5f);
        beta = Fill.Normal(device, dims.C, 4, 0.1f);
        y = device.Pool.Rent<float>(dims.Length);
        dx = device.Pool.RentZeroed<float>(dims.Length);
        mean = device.Pool.Rent<float>(dims.StatCount);
        rstd = device.Pool.Rent<float>(dims.StatCount);
        dgamma = device.Pool.RentZeroed<float>(dims.C);
        dbeta = device.Pool.RentZeroed<float>(dims.C);
        kernels.Forward(x.View, gamma.View, beta.View, y.View, mean.View, rstd.View, dims);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var b in new[] { x, y, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta }) b.Dispose();
    }

    /// <summary>Group norm forward: statistics and normalise-scale-shift (GB/s).</summary>
    [Benchmark]
    public void Forward()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.Forward(x.View, gamma.View, beta.View, y.View, mean.View, rstd.View, dims);
        device.Synchronize();
    }

    /// <summary>Group norm backward: dx, dγ and dβ (GB/s).</summary>
    [Benchmark]
    public void Backward()
    {
        for (int r = 0; r < Settings.Launches; r++)
            kernels.Backward(x.View, gamma.View, beta.View, mean.View, rstd.View, dy.View, dx.View, dgamma.View, dbeta.View, dims);
        device.Synchronize();
    }

    internal sealed class NormCase(string name, GroupNormDims dims, Func<string, Work> work) : BenchCase(name)
    {
        public GroupNormDims Dims { get; } = dims;
        public override Work WorkOf(string method) => work(method);
    }
}
