using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The fused diffusion kernels on a batch of images [B, C, H, W] of each preset (n = B·C·H·W floats):
/// noising (Algorithm 1: draws eps with Philox, xt = √ᾱ x0 + √(1−ᾱ) eps; reads x0, writes eps and xt: 12 bytes
/// an element) and the DDPM posterior step (Algorithm 2, with noise and x̂0 clipping; reads xt and eps, writes
/// x_{t−1}: 12 bytes an element). The per-sample t and the [T] tables are not counted (B + 2T floats).
/// </summary>
[KernelJob]
public class DiffusionBenchmarks
{
    private ComputeDevice device = null!;
    private DiffusionKernels kernels = null!;
    private DeviceBuffer<float> x0 = null!, eps = null!, xt = null!, sqrtAlphaBar = null!, sqrtOneMinusAlphaBar = null!;
    private DeviceBuffer<int> t = null!;
    private ReverseStepCoefficients posterior;
    private int batch, perImage;

    /// <summary>One case per preset: a batch of images.</summary>
    public static IEnumerable<BenchCase> Cases() => PresetShape.Active.Select(preset =>
    {
        int b = Settings.Batch, d = preset.InChannels * preset.ImageSize * preset.ImageSize;
        return (BenchCase)new SizeCase($"{preset.Tag} [{b},{preset.InChannels},{preset.ImageSize},{preset.ImageSize}]", d,
            _ => Work.Memory(3.0 * sizeof(float) * b * d, Settings.Launches));
    });

    /// <summary>The case (its Size is the floats per image).</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers; builds the linear schedule's tables.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<DiffusionKernels>();
        batch = Settings.Batch;
        perImage = ((SizeCase)Case).Size;
        int n = batch * perImage;
        var schedule = NoiseSchedule.Linear();
        x0 = Fill.Uniform(device, n, 1, -1f, 1f);
        eps = Fill.Normal(device, n, 2);
        xt = device.Pool.Rent<float>(n);
        t = Fill.Integers(device, batch, 3, schedule.Timesteps);
        sqrtAlphaBar = Fill.From(device, NoiseSchedule.ToFloat(schedule.SqrtAlphasBar));
        sqrtOneMinusAlphaBar = Fill.From(device, NoiseSchedule.ToFloat(schedule.SqrtOneMinusAlphasBar));
        posterior = new DdpmSampler(VarianceKind.Large, clip: true).Step(schedule, 500, 499);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        x0.Dispose(); eps.Dispose(); xt.Dispose(); t.Dispose(); sqrtAlphaBar.Dispose(); sqrtOneMinusAlphaBar.Dispose();
    }

    /// <summary>Fused noising q(x_t | x_0) with its Philox draws (GB/s).</summary>
    [Benchmark]
    public void Noise()
    {
        for (int r = 0; r < Settings.Launches; r++)
            kernels.Noise(x0.View, t.View, sqrtAlphaBar.View, sqrtOneMinusAlphaBar.View, new PhiloxKey(7, 0, 0), eps.View, xt.View, batch, perImage);
        device.Synchronize();
    }

    /// <summary>One DDPM reverse step x_t → x_{t−1} with noise and clipping (GB/s).</summary>
    [Benchmark]
    public void PosteriorStep()
    {
        for (int r = 0; r < Settings.Launches; r++)
            kernels.ReverseStep(x0.View, eps.View, posterior, new PhiloxKey(7, 1, 0), xt.View);
        device.Synchronize();
    }
}
