using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The 3×3, stride 1, pad 1 convolutions of each U-Net level, C→C channels at the level's resolution
/// (small at 28×28: 32→32 at 28, 64→64 at 14, 64→64 at 7; ddpm-cifar10 at 32×32: 128→128 at 32, 256→256 at 16, 8, 4),
/// and per preset one downsampling (3×3, stride 2) and one 1×1 shortcut convolution,
/// batch <see cref="Settings.Batch"/>. Forward (with bias), backward-input and backward-weight each do
/// 2·N·Cout·Ho·Wo·Cin·K² FLOPs (<see cref="ConvShape.Flops"/>; the bias add is not counted).
/// </summary>
[KernelJob]
public class ConvBenchmarks
{
    private ComputeDevice device = null!;
    private ConvKernels kernels = null!;
    private DeviceBuffer<float> x = null!, w = null!, bias = null!, y = null!, dy = null!, dx = null!, dw = null!;
    private ConvShape shape;

    /// <summary>
    /// One 3×3 case per level of each preset, then the first level's downsampling conv (3×3, stride 2) and the 1×1
    /// shortcut into the second level (the CPU accelerator runs its own blocked kernels for all three kinds).
    /// </summary>
    public static IEnumerable<BenchCase> Cases() => PresetShape.Active.SelectMany(p =>
    {
        var levels = p.Levels.ToArray();
        var (top, next) = (levels[0], levels[Math.Min(1, levels.Length - 1)]);
        return levels.Select(level => new ConvShape(Settings.Batch, level.Channels, level.Resolution, level.Resolution, level.Channels, 3))
            .Append(new ConvShape(Settings.Batch, top.Channels, top.Resolution, top.Resolution, top.Channels, 3, stride: 2))
            .Append(new ConvShape(Settings.Batch, top.Channels, next.Resolution, next.Resolution, next.Channels, 1))
            .Select(s => (BenchCase)new ConvCase($"{p.Tag} n{s.N} {s.Cin}->{s.Cout} {s.H}x{s.W} k{s.K}{(s.Stride > 1 ? $" s{s.Stride}" : "")}", s,
                _ => Work.Compute(s.Flops, Settings.Launches)));
    });

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<ConvKernels>();
        shape = ((ConvCase)Case).Shape;
        float fanIn = shape.Cin * shape.K * shape.K;
        x = Fill.Normal(device, shape.InputLength, 1);
        w = Fill.Normal(device, shape.WeightLength, 2, 1f / MathF.Sqrt(fanIn));
        bias = Fill.Normal(device, shape.Cout, 3, 0.1f);
        dy = Fill.Normal(device, shape.OutputLength, 4);
        y = device.Pool.Rent<float>(shape.OutputLength);
        dx = device.Pool.RentZeroed<float>(shape.InputLength);
        dw = device.Pool.RentZeroed<float>(shape.WeightLength);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var b in new[] { x, w, bias, y, dy, dx, dw }) b.Dispose();
    }

    /// <summary>y = conv(x, w) + b (GFLOP/s).</summary>
    [Benchmark]
    public void Forward()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.Forward(x.View, w.View, bias.View, y.View, shape);
        device.Synchronize();
    }

    /// <summary>dx += convᵀ(dy, w) (GFLOP/s).</summary>
    [Benchmark]
    public void BackwardInput()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.BackwardInput(dy.View, w.View, dx.View, shape);
        device.Synchronize();
    }

    /// <summary>dw += Σ dy ⊗ x (GFLOP/s).</summary>
    [Benchmark]
    public void BackwardWeight()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.BackwardWeight(x.View, dy.View, dw.View, shape);
        device.Synchronize();
    }

    internal sealed class ConvCase(string name, ConvShape shape, Func<string, Work> work) : BenchCase(name)
    {
        public ConvShape Shape { get; } = shape;
        public override Work WorkOf(string method) => work(method);
    }
}
