using ILGPU;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Random;

/// <summary>
/// Fills buffers from Philox4x32-10 (see <see cref="Philox"/>): element i of the output is number
/// <c>key.Offset + i</c> of stream <c>key.Stream</c> under <c>key.Seed</c>. The generator is counter-based, so
/// there is no state to carry between launches; <see cref="ForEach{TOp}"/> is the one launch of every kernel that
/// draws a number per element (<see cref="IRandomElement"/>).
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

    // out[i] = uniform integer in [0, count)
    internal readonly struct BelowKernel(ArrayView<int> output, PhiloxKey key, int count) : IThreadKernel
    {
        public void Execute(int i) => output[i] = Philox.Below(key.Seed, key.Stream, key.Offset + (ulong)i, count);
    }

    // output[e] = its number.
    internal readonly struct StoreDraw(ArrayView<float> output, RandomDraw draw) : IRandomElement
    {
        public RandomDraw Draw => draw;

        public void Apply(int e, float number) => output[e] = number;
    }

    /// <summary>output[i] ~ U[0, 1).</summary>
    public void Uniform(ArrayView<float> output, PhiloxKey key) => ForEach(device, new StoreDraw(output, RandomDraw.Uniform), key, (int)output.Length);

    /// <summary>output[i] ~ N(0, 1).</summary>
    public void Normal(ArrayView<float> output, PhiloxKey key) => ForEach(device, new StoreDraw(output, RandomDraw.Normal), key, (int)output.Length);

    /// <summary>
    /// <c>op.Apply(e, number key.Offset + e of the key's stream)</c> for e &lt; <paramref name="n"/>, one Philox block
    /// (four elements) per unit of <paramref name="shape"/> (the device's element shape when omitted), a unit weighing
    /// <see cref="BlockWeight"/> elements in the shape's share per thread.
    /// </summary>
    public static void ForEach<TOp>(ComputeDevice device, TOp op, PhiloxKey key, int n, GridStride? shape = null) where TOp : struct, IRandomElement
    {
        if (n <= 0) return;
        int blocks = (int)(((key.Offset + (ulong)n - 1UL) >> 2) - (key.Offset >> 2)) + 1;
        var elements = shape ?? device.ElementShape;
        device.LaunchElements(elements with { MinItemsPerThread = Math.Max(1, elements.MinItemsPerThread / BlockWeight) }, blocks, new BlockKernel<TOp>(op, key, n));
    }

    // A unit's cost in element-kernel units: ten Philox rounds (four 32×32→64-bit multiplies each), then four elements'
    // work (for normals two Box–Muller pairs: log, sqrt, sin, cos). Weighed as one element, a batch of one image set
    // (the diffusion kernels' 6,272 floats, 1,568 blocks) ran on one CPU thread, 2.2× slower than before the redesign.
    private const int BlockWeight = 32;

    // Unit u = Philox block (offset >> 2) + u, whose numbers 4·((offset >> 2) + u) + lane belong to elements
    // e = 4u − (offset & 3) + lane: one block evaluation (and, for normals, two Box–Muller pairs) serves four elements.
    internal readonly struct BlockKernel<TOp>(TOp op, PhiloxKey key, int n) : IElementKernel where TOp : struct, IRandomElement
    {
        public void Element(int u)
        {
            float z0 = 0f, z1 = 0f, z2 = 0f, z3 = 0f;
            if (op.Draw != RandomDraw.None)
            {
                Philox.Block(key.Seed, key.Stream, (key.Offset >> 2) + (ulong)u, out uint w0, out uint w1, out uint w2, out uint w3);
                if (op.Draw == RandomDraw.Normal)
                {
                    Philox.BoxMuller(w0, w1, out z0, out z1);
                    Philox.BoxMuller(w2, w3, out z2, out z3);
                }
                else (z0, z1, z2, z3) = (Philox.ToUniform(w0), Philox.ToUniform(w1), Philox.ToUniform(w2), Philox.ToUniform(w3));
            }
            int e = 4 * u - (int)(key.Offset & 3UL);
            Lane(e, z0);
            Lane(e + 1, z1);
            Lane(e + 2, z2);
            Lane(e + 3, z3);
        }

        private void Lane(int e, float number)
        {
            if (e >= 0 && e < n) op.Apply(e, number);
        }
    }

    /// <summary>output[i] ~ U{0, …, count − 1}.</summary>
    public void Integers(ArrayView<int> output, PhiloxKey key, int count)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), "count must be positive");
        device.Launch((int)output.Length, new BelowKernel(output, key, count));
    }
}

/// <summary>What an <see cref="IRandomElement"/> draws per element.</summary>
public enum RandomDraw
{
    /// <summary>Nothing (the number passed is 0): e.g. a reverse step with σ = 0.</summary>
    None,

    /// <summary><see cref="Philox.ToUniform"/> of the element's word: U[0, 1).</summary>
    Uniform,

    /// <summary><see cref="Philox.Normal"/> of the element's number: N(0, 1).</summary>
    Normal,
}

/// <summary>
/// An element-wise operation fed one random number per element (dropout's mask, the noising's ε, the reverse
/// step's z), run by <see cref="RandomKernels.ForEach{TOp}"/>: element e gets number key.Offset + e.
/// </summary>
public interface IRandomElement
{
    /// <summary>Which number each element gets.</summary>
    RandomDraw Draw { get; }

    /// <summary>Processes element <paramref name="e"/> with its <paramref name="number"/>.</summary>
    void Apply(int e, float number);
}
