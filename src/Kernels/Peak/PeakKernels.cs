using ILGPU;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Peak;

/// <summary>
/// Two calibration kernels that measure what the accelerator can do at best, so every other kernel's
/// throughput can be read as a fraction of it (DESIGN.md §7): a multiply-add kernel with eight
/// independent chains per thread (compute peak, GFLOP/s) and a float4-free streaming copy (memory
/// peak, GB/s).
/// </summary>
public sealed class PeakKernels : IKernelFamily<PeakKernels>
{
    /// <summary>Self-check probes. Tolerance: multiply-add chains of 1024 steps: the GPU contracts to FMA (one rounding fewer each).</summary>
    public static KernelProbes Probes { get; } = new("Peak", 1e-4,
    [
        new KernelProbe("MultiplyAdd 4096 threads", k => k.Kernels<PeakKernels>().MultiplyAdd(k.Out(4096).View, 4096)),
        new KernelProbe("Copy n=100003", k => k.Kernels<PeakKernels>().Copy(k.In(100_003).View, k.Out(100_003).View)),
    ]);

    /// <summary>Multiply-adds per chain per launch, for FLOP counting: 2 · 8 chains · <see cref="InnerRounds"/> · 16 per thread.</summary>
    public const int InnerRounds = 64;

    private readonly ComputeDevice device;

    private PeakKernels(ComputeDevice device) => this.device = device;

    /// <inheritdoc/>
    public static PeakKernels Create(ComputeDevice device) => new(device);

    /// <summary>FLOPs one thread of <see cref="MultiplyAdd"/> performs.</summary>
    public static long FlopsPerThread => 2L * 8 * 16 * InnerRounds;

    // out[i] = Σ of 8 chains, each a ← a·b + c applied 16·InnerRounds times. The chains are independent
    // so the FMA pipeline stays full; a·b + c compiles to mul+add which ptxas contracts to fma.
    internal readonly struct MultiplyAddKernel(ArrayView<float> output, float b, float c) : IThreadKernel
    {
        public void Execute(int i)
        {
            float a0 = i * 1e-7f, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7;
            for (int r = 0; r < InnerRounds; r++)
            {
                // 16 rounds over 8 chains, unrolled by hand (ILGPU does not unroll).
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
                a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
            }
            // The sum is written so the compiler cannot drop the work.
            output[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
        }
    }

    // dst[i] = src[i]: one read and one write of 4 bytes per element.
    internal readonly struct CopyKernel(ArrayView<float> source, ArrayView<float> destination) : IThreadKernel
    {
        public void Execute(int i) => destination[i] = source[i];
    }

    /// <summary>Runs <paramref name="threads"/> threads of the multiply-add kernel (output needs that many elements).</summary>
    public void MultiplyAdd(ArrayView<float> output, int threads) =>
        device.Launch(threads, new MultiplyAddKernel(output, 0.999f, 1e-3f));

    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/> (equal lengths).</summary>
    public void Copy(ArrayView<float> source, ArrayView<float> destination)
    {
        if (source.Length != destination.Length)
            throw new ArgumentException($"copy needs equal lengths, got {source.Length} and {destination.Length}");
        device.Launch((int)source.Length, new CopyKernel(source, destination));
    }
}
