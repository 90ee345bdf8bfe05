using ILGPU;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Random;

/// <summary>
/// Fills buffers from Philox4x32-10 (see <see cref="Philox"/>): element i of the output is number
/// <c>key.Offset + i</c> of stream <c>key.Stream</c> under <c>key.Seed</c>. One thread per element; the
/// generator is counter-based, so there is no state to carry between launches.
/// </summary>
public sealed class RandomKernels : IKernelFamily<RandomKernels>
{
    /// <summary>
    /// Self-check probes. Tolerance: Philox bits are exact, but Box–Muller's √(−2 ln u) for u within a few ulps of 1
    /// magnifies the GPU log's absolute error (up to ~1e-4 of the largest |z|).
    /// </summary>
    public static KernelProbes Probes { get; } = new("Random", 1e-3, [.. new[] { (1000, 0UL), (4099, 3UL), (65_536, 1UL << 33) }.Select(s =>
        new KernelProbe($"Uniform, Normal, Integers n={s.Item1} offset={s.Item2}", k =>
        {
            var (random, n, key) = (k.Kernels<RandomKernels>(), s.Item1, new PhiloxKey(0x1234_5678_9ABCUL, 7, s.Item2));
            random.Uniform(k.Out(n).View, key);
            random.Normal(k.Out(n).View, key.Advance(n));
            random.Integers(k.IntOut(n).View, key with { Stream = 8 }, 1000);
        }))]);

    private readonly ComputeDevice device;

    private RandomKernels(ComputeDevice device) => this.device = device;

    /// <inheritdoc/>
    public static RandomKernels Create(ComputeDevice device) => new(device);

    // out[i] = U[0,1)(seed, stream, offset + i)
    internal readonly struct UniformKernel(ArrayView<float> output, PhiloxKey key) : IThreadKernel
    {
        public void Execute(int i) => output[i] = Philox.Uniform(key.Seed, key.Stream, key.Offset + (ulong)i);
    }

    // out[i] = N(0,1)(seed, stream, offset + i), Box–Muller
    internal readonly struct NormalKernel(ArrayView<float> output, PhiloxKey key) : IThreadKernel
    {
        public void Execute(int i) => output[i] = Philox.Normal(key.Seed, key.Stream, key.Offset + (ulong)i);
    }

    // out[i] = uniform integer in [0, count)
    internal readonly struct BelowKernel(ArrayView<int> output, PhiloxKey key, int count) : IThreadKernel
    {
        public void Execute(int i) => output[i] = Philox.Below(key.Seed, key.Stream, key.Offset + (ulong)i, count);
    }

    /// <summary>output[i] ~ U[0, 1).</summary>
    public void Uniform(ArrayView<float> output, PhiloxKey key) => device.Launch((int)output.Length, new UniformKernel(output, key));

    /// <summary>output[i] ~ N(0, 1).</summary>
    public void Normal(ArrayView<float> output, PhiloxKey key) => device.Launch((int)output.Length, new NormalKernel(output, key));

    /// <summary>output[i] ~ U{0, …, count − 1}.</summary>
    public void Integers(ArrayView<int> output, PhiloxKey key, int count)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), "count must be positive");
        device.Launch((int)output.Length, new BelowKernel(output, key, count));
    }
}
