using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Reduce;

/// <summary>
/// How a deterministic reduction is parallelised. Both variants give the same bits on every run of one
/// accelerator (fixed summation order, no atomics); they differ from each other in the last bits.
/// </summary>
public enum ReductionVariant
{
    /// <summary><see cref="PerThreadLoop"/> on the CPU accelerator, <see cref="GroupTree"/> elsewhere.</summary>
    Auto,

    /// <summary>One thread sums a whole segment in a fixed order (4 interleaved accumulators); no barriers.</summary>
    PerThreadLoop,

    /// <summary>One group of threads per segment: strided per-thread sums, then a fixed binary tree in shared memory.</summary>
    GroupTree,
}

/// <summary>
/// Deterministic reductions of a long vector to one number — Σx and Σ(a−b)² (the MSE loss) — and their
/// backward kernels. Two stages: stage 1 sums fixed segments of <see cref="SegmentLength"/> elements into
/// partial sums (one thread or one group per segment), stage 2 sums the partials into the output. The
/// summation order depends only on the length and the variant, never on timing: same inputs, same bits.
/// ILGPU.Algorithms' <c>Reduce</c> is not used: it finishes with atomic adds, whose float order varies.
/// </summary>
public sealed class ReduceKernels : IKernelFamily<ReduceKernels>
{
    /// <summary>Elements summed into one stage-1 partial.</summary>
    public const int SegmentLength = 4096;

    /// <summary>Largest group the tree kernels use (and the size of their shared-memory array).</summary>
    internal const int MaxTreeWidth = 256;

    private readonly ComputeDevice device;
    private readonly int treeWidth;

    private ReduceKernels(ComputeDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        treeWidth = TreeWidthFor(acc, MaxTreeWidth);
    }

    /// <inheritdoc/>
    public static ReduceKernels Create(ComputeDevice device) => new(device);

    // ---------------------------------------------------------------------------------------------
    // Shared helpers (also used by NormKernels)

    /// <summary>The largest power of two ≤ min(<paramref name="cap"/>, the accelerator's group limit).</summary>
    internal static int TreeWidthFor(Accelerator acc, int cap)
    {
        int limit = Math.Min(cap, acc.MaxNumThreadsPerGroup);
        int width = 1;
        while (width * 2 <= limit) width *= 2;
        return width;
    }

    /// <summary>Smallest power of two ≥ <paramref name="n"/>, capped at <paramref name="cap"/> (a power of two).</summary>
    internal static int PowerOfTwoAtLeast(int n, int cap)
    {
        int width = 1;
        while (width < n && width < cap) width *= 2;
        return width;
    }

    /// <summary>
    /// Elements per thread for chunked element-wise kernels: 1 on GPUs (coalesced, one thread per element);
    /// on the CPU accelerator, which runs one OS thread per kernel thread, enough that about
    /// <c>MaxNumThreads</c> threads cover the vector. The choice never changes results (no reduction).
    /// </summary>
    internal static int ElementChunk(ComputeDevice device, int length) =>
        device.IsCpu ? Math.Max(1, (int)((length + (long)device.Accelerator.MaxNumThreads - 1) / device.Accelerator.MaxNumThreads)) : 1;

    /// <summary>Number of threads covering <paramref name="length"/> elements in chunks of <paramref name="chunk"/>.</summary>
    internal static int ThreadsFor(int length, int chunk) => (int)(((long)length + chunk - 1) / chunk);

    /// <summary>
    /// Sums one value per thread of the group with a fixed binary tree in <paramref name="shared"/>
    /// (group width a power of two): pairs (t, t + w/2), then (t, t + w/4), … The order depends only on
    /// the group width. Every thread of the group must call it; every thread gets the total.
    /// </summary>
    internal static float GroupTreeSum(ArrayView<float> shared, float value)
    {
        int t = Group.IdxX;
        shared[t] = value;
        Group.Barrier();
        for (int half = Group.DimX / 2; half > 0; half >>= 1)
        {
            if (t < half) shared[t] = shared[t] + shared[t + half];
            Group.Barrier();
        }
        float total = shared[0];
        Group.Barrier(); // nobody may overwrite shared[0] before every thread has read it
        return total;
    }

    // The reduced term: x[i] (mode 0) or (a[i] − b[i])² (mode 1).
    private static float Term(ArrayView<float> a, ArrayView<float> b, int i, int squaredDifference)
    {
        if (squaredDifference == 0) return a[i];
        float d = a[i] - b[i];
        return d * d;
    }

    // ---------------------------------------------------------------------------------------------
    // Stage 1: a [n] (and b [n]) -> partials [ceil(n / SegmentLength)]
    // partials[p] = Σ_{i in segment p} term(i), term = a[i] or (a[i] − b[i])²

    // One thread per segment; element i of the segment goes to accumulator i mod 4, combined as (s0+s1)+(s2+s3).
    internal readonly struct PartialSumsLoopKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> partials, int n, int squaredDifference) : IThreadKernel
    {
        public void Execute(int p)
        {
            int start = p * SegmentLength;
            int end = Math.Min(start + SegmentLength, n);
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int i = start;
            for (; i + 4 <= end; i += 4)
            {
                s0 += Term(a, b, i, squaredDifference);
                s1 += Term(a, b, i + 1, squaredDifference);
                s2 += Term(a, b, i + 2, squaredDifference);
                s3 += Term(a, b, i + 3, squaredDifference);
            }
            for (; i < end; i++) s0 += Term(a, b, i, squaredDifference);
            partials[p] = (s0 + s1) + (s2 + s3);
        }
    }

    // One group per segment (grid = #segments): thread t sums elements t, t + w, t + 2w, … of the
    // segment (coalesced), then the group's fixed tree adds the w per-thread sums.
    internal readonly struct PartialSumsTreeKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> partials, int n, int squaredDifference) : IGroupKernel
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(MaxTreeWidth);
            int p = Grid.IdxX;
            int start = p * SegmentLength;
            int end = Math.Min(start + SegmentLength, n);
            float s = 0f;
            for (int i = start + Group.IdxX; i < end; i += Group.DimX) s += Term(a, b, i, squaredDifference);
            float total = GroupTreeSum(shared, s);
            if (Group.IdxX == 0) partials[p] = total;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Stage 2: partials [count] -> output [1] = scale · Σ partials

    // A single thread, 4 interleaved accumulators as in stage 1.
    internal readonly struct FinalSumLoopKernel(ArrayView<float> partials, ArrayView<float> output, int count, float scale) : IThreadKernel
    {
        public void Execute(int unused)
        {
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int i = 0;
            for (; i + 4 <= count; i += 4)
            {
                s0 += partials[i];
                s1 += partials[i + 1];
                s2 += partials[i + 2];
                s3 += partials[i + 3];
            }
            for (; i < count; i++) s0 += partials[i];
            output[0] = scale * ((s0 + s1) + (s2 + s3));
        }
    }

    // A single group: strided per-thread sums, then the fixed tree.
    internal readonly struct FinalSumTreeKernel(ArrayView<float> partials, ArrayView<float> output, int count, float scale) : IGroupKernel
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(MaxTreeWidth);
            float s = 0f;
            for (int i = Group.IdxX; i < count; i += Group.DimX) s += partials[i];
            float total = GroupTreeSum(shared, s);
            if (Group.IdxX == 0) output[0] = scale * total;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Backward kernels: chunked, thread t handles elements [t·chunk, (t+1)·chunk).

    // d/dx_i of L = scale · Σ x:  dx[i] += scale · dloss[0]
    internal readonly struct BroadcastAddKernel(ArrayView<float> dx, ArrayView<float> dloss, float scale, int n, int chunk) : IThreadKernel
    {
        public void Execute(int t)
        {
            int start = t * chunk;
            int end = Math.Min(start + chunk, n);
            float g = scale * dloss[0];
            for (int i = start; i < end; i++) dx[i] += g;
        }
    }

    // d/da_i of L = s · Σ (a − b)²:  grad[i] += 2s · (a[i] − b[i]) · dloss[0]   (coefficient = ±2s)
    internal readonly struct SquaredDifferenceBackwardKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> dloss, ArrayView<float> grad, float coefficient, int n, int chunk) : IThreadKernel
    {
        public void Execute(int t)
        {
            int start = t * chunk;
            int end = Math.Min(start + chunk, n);
            float g = coefficient * dloss[0];
            for (int i = start; i < end; i++) grad[i] += g * (a[i] - b[i]);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Launch methods

    /// <summary>Number of stage-1 partial sums for <paramref name="length"/> elements.</summary>
    public static int PartialCount(int length) => (length + SegmentLength - 1) / SegmentLength;

    /// <summary>x [n] -> output [1] = scale · Σ_i x[i]. Deterministic (see the class remarks).</summary>
    public void Sum(ArrayView<float> x, ArrayView<float> output, float scale = 1f, ReductionVariant variant = ReductionVariant.Auto)
    {
        if (x.Length < 1) throw new ArgumentException("sum: the input must hold at least one element");
        if (output.Length != 1) throw new ArgumentException($"sum: expected an output of 1 element, got {output.Length}");
        Reduce(x, x, output, scale, 0, variant, treeWidth);
    }

    /// <summary>
    /// a [n], b [n] -> output [1] = scale · Σ_i (a[i] − b[i])²; with scale = 1/n this is the MSE loss.
    /// Deterministic (see the class remarks).
    /// </summary>
    public void SumOfSquaredDifferences(ArrayView<float> a, ArrayView<float> b, ArrayView<float> output, float scale = 1f, ReductionVariant variant = ReductionVariant.Auto)
    {
        if (a.Length < 1) throw new ArgumentException("sum of squared differences: the inputs must hold at least one element");
        if (b.Length != a.Length) throw new ArgumentException($"sum of squared differences: expected inputs of equal length, got {a.Length} and {b.Length}");
        if (output.Length != 1) throw new ArgumentException($"sum of squared differences: expected an output of 1 element, got {output.Length}");
        Reduce(a, b, output, scale, 1, variant, treeWidth);
    }

    /// <summary>
    /// Both reductions (squaredDifference 0: scale·Σa, 1: scale·Σ(a−b)²) with the tree variant's group width
    /// capped at <paramref name="maxTreeWidth"/> (a power of two; tests use small ones: barriers are slow on
    /// the CPU accelerator). Lengths are checked by the public methods.
    /// </summary>
    internal void Reduce(ArrayView<float> a, ArrayView<float> b, ArrayView<float> output, float scale, int squaredDifference, ReductionVariant variant, int maxTreeWidth)
    {
        if (maxTreeWidth < 1 || maxTreeWidth > treeWidth || (maxTreeWidth & (maxTreeWidth - 1)) != 0)
            throw new ArgumentException($"reduce: the tree width must be a power of two from 1 to {treeWidth}, got {maxTreeWidth}");
        if (a.Length > int.MaxValue - SegmentLength) throw new ArgumentException($"reduce: at most 2^31 − {SegmentLength + 1} elements (32-bit indices), got {a.Length}");
        int n = (int)a.Length;
        int count = PartialCount(n);
        // The partials go back to the pool as soon as both stages are queued: every later use of that
        // memory is queued after them on the same stream.
        using var partials = device.Pool.Rent<float>(count);
        bool tree = Resolve(variant) == ReductionVariant.GroupTree;
        if (tree)
        {
            device.Launch(new KernelConfig(count, maxTreeWidth), new PartialSumsTreeKernel(a, b, partials.View, n, squaredDifference));
            device.Launch(new KernelConfig(1, PowerOfTwoAtLeast(count, maxTreeWidth)), new FinalSumTreeKernel(partials.View, output, count, scale));
        }
        else
        {
            device.Launch(count, new PartialSumsLoopKernel(a, b, partials.View, n, squaredDifference));
            device.Launch(1, new FinalSumLoopKernel(partials.View, output, count, scale));
        }
    }

    /// <summary>The variant <see cref="ReductionVariant.Auto"/> stands for on this device.</summary>
    internal ReductionVariant Resolve(ReductionVariant variant) => variant switch
    {
        ReductionVariant.Auto => device.IsCpu ? ReductionVariant.PerThreadLoop : ReductionVariant.GroupTree,
        _ => variant,
    };

    /// <summary>
    /// Backward of <c>output = scale · Σ x</c>: dx[i] += scale · dloss[0] for every i (dloss: a 1-element
    /// device view). ADDS into <paramref name="dx"/>.
    /// </summary>
    public void SumBackward(ArrayView<float> dloss, ArrayView<float> dx, float scale = 1f)
    {
        if (dloss.Length != 1) throw new ArgumentException($"sum backward: expected a 1-element upstream gradient, got {dloss.Length}");
        if (dx.Length < 1 || dx.Length > int.MaxValue) throw new ArgumentException($"sum backward: expected a gradient of 1 to 2^31 − 1 elements, got {dx.Length}");
        int n = (int)dx.Length;
        int chunk = ElementChunk(device, n);
        device.Launch(ThreadsFor(n, chunk), new BroadcastAddKernel(dx, dloss, scale, n, chunk));
    }

    /// <summary>
    /// Backward of <c>output = scale · Σ (a − b)²</c> (MSE: scale = 1/n) with respect to <paramref name="a"/>
    /// (<paramref name="withRespectToB"/> false: grad[i] += 2·scale·(a[i] − b[i])·dloss[0]) or to
    /// <paramref name="b"/> (true: grad[i] −= the same). dloss is a 1-element device view.
    /// ADDS into <paramref name="grad"/>.
    /// </summary>
    public void SumOfSquaredDifferencesBackward(ArrayView<float> a, ArrayView<float> b, ArrayView<float> dloss, ArrayView<float> grad, float scale, bool withRespectToB = false)
    {
        if (dloss.Length != 1) throw new ArgumentException($"squared-difference backward: expected a 1-element upstream gradient, got {dloss.Length}");
        if (a.Length < 1 || a.Length > int.MaxValue) throw new ArgumentException($"squared-difference backward: expected 1 to 2^31 − 1 elements, got {a.Length}");
        if (b.Length != a.Length || grad.Length != a.Length)
            throw new ArgumentException($"squared-difference backward: expected a, b and grad of equal length, got {a.Length}, {b.Length} and {grad.Length}");
        int n = (int)a.Length;
        int chunk = ElementChunk(device, n);
        float coefficient = (withRespectToB ? -2f : 2f) * scale;
        device.Launch(ThreadsFor(n, chunk), new SquaredDifferenceBackwardKernel(a, b, dloss, grad, coefficient, n, chunk));
    }
}
