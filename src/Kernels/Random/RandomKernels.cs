using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Random;

/// <summary>
/// Fills buffers from Philox4x32-10 (see <see cref="Philox"/>): element i of the output is number
/// <c>key.Offset + i</c> of stream <c>key.Stream</c> under <c>key.Seed</c>. One thread per element; the
/// generator is counter-based, so there is no state to carry between launches.
/// </summary>
public sealed class RandomKernels : IKernelFamily<RandomKernels>
{
    private readonly ComputeDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ulong, uint, ulong> uniform;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ulong, uint, ulong> normal;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<int>, ulong, uint, ulong, int> below;

    private RandomKernels(ComputeDevice device)
    {
        this.device = device;
        uniform = device.LoadStreamingKernel<ArrayView<float>, ulong, uint, ulong>(UniformKernel);
        normal = device.LoadStreamingKernel<ArrayView<float>, ulong, uint, ulong>(NormalKernel);
        below = device.LoadStreamingKernel<ArrayView<int>, ulong, uint, ulong, int>(BelowKernel);
    }

    /// <inheritdoc/>
    public static RandomKernels Create(ComputeDevice device) => new(device);

    // out[i] = U[0,1)(seed, stream, offset + i)
    internal static void UniformKernel(Index1D i, ArrayView<float> output, ulong seed, uint stream, ulong offset) =>
        output[i] = Philox.Uniform(seed, stream, offset + (ulong)i.X);

    // out[i] = N(0,1)(seed, stream, offset + i), Box–Muller
    internal static void NormalKernel(Index1D i, ArrayView<float> output, ulong seed, uint stream, ulong offset) =>
        output[i] = Philox.Normal(seed, stream, offset + (ulong)i.X);

    // out[i] = uniform integer in [0, count)
    internal static void BelowKernel(Index1D i, ArrayView<int> output, ulong seed, uint stream, ulong offset, int count) =>
        output[i] = Philox.Below(seed, stream, offset + (ulong)i.X, count);

    /// <summary>output[i] ~ U[0, 1).</summary>
    public void Uniform(ArrayView<float> output, PhiloxKey key) =>
        uniform(device.Stream, (int)output.Length, output, key.Seed, key.Stream, key.Offset);

    /// <summary>output[i] ~ N(0, 1).</summary>
    public void Normal(ArrayView<float> output, PhiloxKey key) =>
        normal(device.Stream, (int)output.Length, output, key.Seed, key.Stream, key.Offset);

    /// <summary>output[i] ~ U{0, …, count − 1}.</summary>
    public void Integers(ArrayView<int> output, PhiloxKey key, int count)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), "count must be positive");
        below(device.Stream, (int)output.Length, output, key.Seed, key.Stream, key.Offset, count);
    }
}
