using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Matmul;

namespace IlgpuDdpm.Bench;

/// <summary>
/// Batched GEMM at the attention shapes and a square one: the scores qᵀ·k of single-head attention over
/// L = H·W positions with C channels, q and k [B, C, L] → [B, L, L] (M = N = L, K = C, A transposed; small: C 64
/// at L 49 = 7×7, its attention resolution, and L 196 = 14×14; ddpm-cifar10: C 256 at L 256 = 16×16), and one
/// square 256³ (1024³ as well in a full run). 2·Batch·M·N·K FLOPs (<see cref="GemmDims.Flops"/>).
/// </summary>
[KernelJob]
public class MatmulBenchmarks
{
    private ComputeDevice device = null!;
    private MatmulKernels kernels = null!;
    private DeviceBuffer<float> a = null!, b = null!, c = null!;
    private GemmDims dims;

    /// <summary>The cases above.</summary>
    public static IEnumerable<BenchCase> Cases()
    {
        int batch = Settings.Batch;
        var list = new List<(string Name, GemmDims Dims)>
        {
            ($"small q'k C64 L49 x{batch}", new GemmDims(batch, 49, 49, 64, TransposeA: true)),
            ($"small q'k C64 L196 x{batch}", new GemmDims(batch, 196, 196, 64, TransposeA: true)),
            ("square 256^3", new GemmDims(1, 256, 256, 256)),
        };
        if (!Settings.Quick)
        {
            list.Add(($"cifar q'k C256 L256 x{batch}", new GemmDims(batch, 256, 256, 256, TransposeA: true)));
            list.Add(("square 1024^3", new GemmDims(1, 1024, 1024, 1024)));
        }
        return list.Select(e => (BenchCase)new GemmCase(e.Name, e.Dims));
    }

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Rents and fills the buffers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        kernels = device.Kernels<MatmulKernels>();
        dims = ((GemmCase)Case).Dims;
        a = Fill.Normal(device, dims.Batch * dims.M * dims.K, 1);
        b = Fill.Normal(device, dims.Batch * dims.K * dims.N, 2);
        c = device.Pool.Rent<float>(dims.Batch * dims.M * dims.N);
        device.Synchronize();
    }

    /// <summary>Returns the buffers.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        a.Dispose(); b.Dispose(); c.Dispose();
    }

    /// <summary>C[b] = op(A[b])·op(B[b]) with the device's default variant (GFLOP/s).</summary>
    [Benchmark]
    public void Gemm()
    {
        for (int r = 0; r < Settings.Launches; r++) kernels.Gemm(a.View, b.View, c.View, dims);
        device.Synchronize();
    }

    internal sealed class GemmCase(string name, GemmDims dims) : BenchCase(name)
    {
        public GemmDims Dims { get; } = dims;
        public override Work WorkOf(string method) => Work.Compute(Dims.Flops, Settings.Launches);
    }
}
