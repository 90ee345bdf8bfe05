using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Reduce;

/// <summary>
/// How the deterministic reduction is parallelised. Every variant gives the same bits on every run of one
/// accelerator (fixed summation order, no atomics); the variants differ from each other in the last bits.
/// </summary>
public enum ReductionVariant
{
    /// <summary><see cref="PerThreadLoop"/> on the CPU accelerator, <see cref="GroupTree"/> elsewhere.</summary>
    Auto,

    /// <summary>One thread sums a whole segment in a fixed order (4 interleaved accumulators, <see cref="RowSum"/>); no barriers.</summary>
    PerThreadLoop,

    /// <summary>One group of threads per segment: strided per-thread sums, then a fixed binary tree in shared memory.</summary>
    GroupTree,
}

/// <summary>The value a reduction sums at flat index <c>i</c> of segment row <c>row</c> (e.g. x[i], (a[i] − b[i])²).</summary>
public interface IReductionTerm
{
    /// <summary>The term at flat index <paramref name="i"/>, which lies in row <paramref name="row"/>.</summary>
    float At(int row, int i);
}

/// <summary>What a reduction does with the total of row <c>row</c> (store it, scale it, add it, finish a statistic).</summary>
public interface IReductionSink
{
    /// <summary>Receives Σ of row <paramref name="row"/>.</summary>
    void Write(int row, float total);
}

/// <summary>x[i].</summary>
public readonly struct ValueTerm(ArrayView<float> x) : IReductionTerm
{
    /// <inheritdoc/>
    public float At(int row, int i) => x[i];
}

/// <summary>x[i]².</summary>
public readonly struct SquareTerm(ArrayView<float> x) : IReductionTerm
{
    /// <inheritdoc/>
    public float At(int row, int i)
    {
        float v = x[i];
        return v * v;
    }
}

/// <summary>(a[i] − b[i])².</summary>
public readonly struct SquaredDifferenceTerm(ArrayView<float> a, ArrayView<float> b) : IReductionTerm
{
    /// <inheritdoc/>
    public float At(int row, int i)
    {
        float d = a[i] - b[i];
        return d * d;
    }
}

/// <summary>Column sums of a row-major [rows, cols] matrix x: row c of the reduction is column c, rowLength = rows.</summary>
public readonly struct ColumnTerm(ArrayView<float> x, int rows, int cols) : IReductionTerm
{
    /// <inheritdoc/>
    public float At(int c, int i) => x[(i - c * rows) * cols + c];
}

/// <summary>output[offset + row] = scale · total (scale 1 stores the total unchanged).</summary>
public readonly struct StoreSink(ArrayView<float> output, int offset, float scale) : IReductionSink
{
    /// <inheritdoc/>
    public void Write(int row, float total) => output[offset + row] = scale * total;
}

/// <summary>output[row] += total.</summary>
public readonly struct AddSink(ArrayView<float> output) : IReductionSink
{
    /// <inheritdoc/>
    public void Write(int row, float total) => output[row] += total;
}

/// <summary>
/// THE deterministic reduction of the project: <c>rows</c> rows of <c>rowLength</c> consecutive indices,
/// each summed to one number in an order that depends only on the lengths and the variant, never on timing,
/// so the same inputs give the same bits. Two stages: rows longer than <see cref="SegmentLength"/> are cut
/// into segments summed into partials (stage 1), whose row sums (stage 2, the same kernel over the
/// partials) reach the sink; a row of at most one segment goes to the sink in one stage. Per segment:
/// <see cref="ReductionVariant.PerThreadLoop"/> (one thread, <see cref="RowSum"/>'s 4 accumulators) or
/// <see cref="ReductionVariant.GroupTree"/> (a group, strided sums then <see cref="GroupTreeSum"/>).
/// What is summed is an <see cref="IReductionTerm"/>, where it goes an <see cref="IReductionSink"/>: the losses
/// (Σx, Σ(a−b)²), group norm's statistics, the gradient norm and the variational bound are all this.
/// ILGPU.Algorithms' <c>Reduce</c> is not used: it finishes with atomic adds, whose float order varies.
/// </summary>
public sealed class ReduceKernels : IKernelFamily<ReduceKernels>
{
    /// <summary>Self-check probes. Tolerance: sums of 10^5 positive values in another order (two-stage tree vs loop).</summary>
    public static KernelProbes Probes { get; } = new("Reduce", 1e-4,
    [
        .. new[] { 1000, 4096 * 3 + 17, 100_003 }.Select(n => new KernelProbe($"Sum, SumOfSquaredDifferences n={n}", k =>
        {
            var a = k.In(n, 0f, 1f);
            k.Kernels<ReduceKernels>().Sum(a.View, k.Out(1).View, 1f / n);
            k.Kernels<ReduceKernels>().SumOfSquaredDifferences(a.View, k.In(n).View, k.Out(1).View, 1f / n);
        })),
        new KernelProbe("SumBackward, SumOfSquaredDifferencesBackward n=5003", k =>
        {
            var (reduce, a, b, dloss) = (k.Kernels<ReduceKernels>(), k.In(5003), k.In(5003), k.Upload(new[] { 0.75f }));
            reduce.SumBackward(dloss.View, k.Acc(5003).View, 0.5f); // backward kernels add into their outputs
            reduce.SumOfSquaredDifferencesBackward(a.View, b.View, dloss.View, k.Out(5003).View, 1f / 5003);
            reduce.SumOfSquaredDifferencesBackward(a.View, b.View, dloss.View, k.Out(5003).View, 1f / 5003, withRespectToB: true);
        }),
    ]);

    /// <summary>Elements summed into one stage-1 partial.</summary>
    public const int SegmentLength = 4096;

    /// <summary>Largest group the tree kernels use (and the size of their shared-memory array).</summary>
    internal const int MaxTreeWidth = 256;

    private readonly ComputeDevice device;

    private ReduceKernels(ComputeDevice device)
    {
        this.device = device;
        TreeWidth = TreeWidthFor(device.Accelerator, MaxTreeWidth);
    }

    /// <inheritdoc/>
    public static ReduceKernels Create(ComputeDevice device) => new(device);

    /// <summary>The widest tree group on this accelerator (a power of two ≤ <see cref="MaxTreeWidth"/>).</summary>
    internal int TreeWidth { get; }

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

    // ---------------------------------------------------------------------------------------------
    // One stage: unit j = segment c of row r (j = r·segments + c) sums term over
    // [r·rowLength + c·segment, min(that + segment, (r + 1)·rowLength)) and hands the sum to sink.Write(j).

    /// <summary>
    /// Σ term.At(r, i) for i in [start, end) by one thread in the fixed order of the loop variant: element k
    /// into accumulator k mod 4, combined (s0 + s1) + (s2 + s3).
    /// </summary>
    internal static float LoopSum<TTerm>(TTerm term, int r, int start, int end) where TTerm : struct, IReductionTerm
    {
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
        int i = start;
        for (; i + 3 < end; i += 4)
        {
            s0 += term.At(r, i);
            s1 += term.At(r, i + 1);
            s2 += term.At(r, i + 2);
            s3 += term.At(r, i + 3);
        }
        for (; i < end; i++) s0 += term.At(r, i);
        return (s0 + s1) + (s2 + s3);
    }

    /// <summary>
    /// Σ term.At(r, i) for i in [start, end) by the calling group in the fixed order of the tree variant: thread t
    /// sums t, t + w, … then <see cref="GroupTreeSum"/>. Every thread of the group must call it; all get the total.
    /// </summary>
    internal static float TreeSum<TTerm>(TTerm term, int r, int start, int end, ArrayView<float> shared) where TTerm : struct, IReductionTerm
    {
        float s = 0f;
        for (int i = start + Group.IdxX; i < end; i += Group.DimX) s += term.At(r, i);
        return GroupTreeSum(shared, s);
    }

    // One thread per segment (LoopSum's order).
    internal readonly struct LoopStageKernel<TTerm, TSink>(TTerm term, TSink sink, int rowLength, int segment, int segments) : IElementKernel
        where TTerm : struct, IReductionTerm where TSink : struct, IReductionSink
    {
        public void Element(int j)
        {
            int r = j / segments;
            int start = r * rowLength + (j - r * segments) * segment;
            sink.Write(j, LoopSum(term, r, start, Math.Min(start + segment, r * rowLength + rowLength)));
        }
    }

    // One group per segment (grid = #segments): thread t sums elements t, t + w, t + 2w, … of the segment
    // (coalesced), then the group's fixed tree adds the w per-thread sums.
    internal readonly struct TreeStageKernel<TTerm, TSink>(TTerm term, TSink sink, int rowLength, int segment, int segments) : IGroupKernel
        where TTerm : struct, IReductionTerm where TSink : struct, IReductionSink
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(MaxTreeWidth);
            int j = Grid.IdxX;
            int r = j / segments;
            int start = r * rowLength + (j - r * segments) * segment;
            float total = TreeSum(term, r, start, Math.Min(start + segment, r * rowLength + rowLength), shared);
            if (Group.IdxX == 0) sink.Write(j, total);
        }
    }

    // Stage 2's term: the partials of row r.
    internal readonly struct PartialsTerm(ArrayView<float> partials) : IReductionTerm
    {
        public float At(int row, int i) => partials[i];
    }

    /// <summary>
    /// For r in [0, <paramref name="rows"/>): <c>sink.Write(r, Σ_{i = r·rowLength}^{(r+1)·rowLength − 1} term.At(r, i))</c>,
    /// deterministically (see the class remarks). An empty row (rowLength 0) writes 0.
    /// <paramref name="maxTreeWidth"/> caps the tree variant's group (0 = <see cref="TreeWidth"/>; tests use small
    /// ones: barriers are slow on the CPU accelerator).
    /// </summary>
    public void Rows<TTerm, TSink>(TTerm term, TSink sink, int rows, int rowLength, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0)
        where TTerm : struct, IReductionTerm where TSink : struct, IReductionSink
    {
        maxTreeWidth = Width(maxTreeWidth);
        if (rows < 0 || rowLength < 0 || (long)rows * rowLength > int.MaxValue - SegmentLength)
            throw new ArgumentException($"reduce: {rows} rows of {rowLength} exceed 2^31 − {SegmentLength + 1} elements (32-bit indices)");
        if (rows == 0) return;
        bool tree = Resolve(variant) == ReductionVariant.GroupTree;
        int segments = (rowLength + SegmentLength - 1) / SegmentLength;
        if (segments <= 1)
        {
            Stage(term, sink, rows, rowLength, Math.Max(1, rowLength), 1, tree, maxTreeWidth);
            return;
        }
        // The partials go back to the pool as soon as both stages are queued: every later use of that
        // memory is queued after them on the same stream.
        using var partials = device.Pool.Rent<float>(rows * segments);
        Stage(term, new StoreSink(partials.View, 0, 1f), rows, rowLength, SegmentLength, segments, tree, maxTreeWidth);
        Stage(new PartialsTerm(partials.View), sink, rows, segments, segments, 1, tree, maxTreeWidth);
    }

    /// <summary>Per-thread segment launches on the CPU accelerator: enough segments of <paramref name="segment"/> elements per thread to make up the element shape's share.</summary>
    internal GridStride SegmentShape(int segment) => device.ElementShape with { MinItemsPerThread = Math.Max(1, device.ElementShape.MinItemsPerThread / Math.Max(1, segment)) };

    private void Stage<TTerm, TSink>(TTerm term, TSink sink, int rows, int rowLength, int segment, int segments, bool tree, int maxTreeWidth)
        where TTerm : struct, IReductionTerm where TSink : struct, IReductionSink
    {
        int units = rows * segments;
        if (tree)
        {
            device.Launch(new KernelConfig(units, PowerOfTwoAtLeast(Math.Min(segment, Math.Max(1, rowLength)), maxTreeWidth)),
                          new TreeStageKernel<TTerm, TSink>(term, sink, rowLength, segment, segments));
            return;
        }
        device.LaunchElements(SegmentShape(segment), units, new LoopStageKernel<TTerm, TSink>(term, sink, rowLength, segment, segments));
    }

    /// <summary>A tree-width cap checked (a power of two from 1 to <see cref="TreeWidth"/>; 0 = <see cref="TreeWidth"/>).</summary>
    internal int Width(int maxTreeWidth)
    {
        if (maxTreeWidth == 0) return TreeWidth;
        if (maxTreeWidth < 1 || maxTreeWidth > TreeWidth || (maxTreeWidth & (maxTreeWidth - 1)) != 0)
            throw new ArgumentException($"reduce: the tree width must be a power of two from 1 to {TreeWidth}, got {maxTreeWidth}");
        return maxTreeWidth;
    }

    /// <summary>The variant <see cref="ReductionVariant.Auto"/> stands for on this device.</summary>
    public ReductionVariant Resolve(ReductionVariant variant) => variant switch
    {
        ReductionVariant.Auto => device.UsesGpuVariants ? ReductionVariant.GroupTree : ReductionVariant.PerThreadLoop,
        _ => variant,
    };

    // ---------------------------------------------------------------------------------------------
    // The losses

    /// <summary>x [n] -> output [1] = scale · Σ_i x[i]. Deterministic (see the class remarks).</summary>
    public void Sum(ArrayView<float> x, ArrayView<float> output, float scale = 1f, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0)
    {
        if (x.Length < 1) throw new ArgumentException("sum: the input must hold at least one element");
        if (output.Length != 1) throw new ArgumentException($"sum: expected an output of 1 element, got {output.Length}");
        Rows(new ValueTerm(x), new StoreSink(output, 0, scale), 1, Length(x, "sum"), variant, maxTreeWidth);
    }

    /// <summary>
    /// a [n], b [n] -> output [1] = scale · Σ_i (a[i] − b[i])²; with scale = 1/n this is the MSE loss.
    /// Deterministic (see the class remarks).
    /// </summary>
    public void SumOfSquaredDifferences(ArrayView<float> a, ArrayView<float> b, ArrayView<float> output, float scale = 1f, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0)
    {
        if (a.Length < 1) throw new ArgumentException("sum of squared differences: the inputs must hold at least one element");
        if (b.Length != a.Length) throw new ArgumentException($"sum of squared differences: expected inputs of equal length, got {a.Length} and {b.Length}");
        if (output.Length != 1) throw new ArgumentException($"sum of squared differences: expected an output of 1 element, got {output.Length}");
        Rows(new SquaredDifferenceTerm(a, b), new StoreSink(output, 0, scale), 1, Length(a, "sum of squared differences"), variant, maxTreeWidth);
    }

    private static int Length(ArrayView<float> x, string what) =>
        x.Length <= int.MaxValue - SegmentLength ? (int)x.Length : throw new ArgumentException($"{what}: at most 2^31 − {SegmentLength + 1} elements (32-bit indices), got {x.Length}");

    // ---------------------------------------------------------------------------------------------
    // Backward of the losses: element-wise, ADDING into the gradient.

    // d/dx_i of L = scale · Σ x:  dx[i] += scale · dloss[0]
    internal readonly struct BroadcastAddKernel(ArrayView<float> dx, ArrayView<float> dloss, float scale) : IElementKernel
    {
        public void Element(int i) => dx[i] += scale * dloss[0];
    }

    // d/da_i of L = s · Σ (a − b)²:  grad[i] += 2s · (a[i] − b[i]) · dloss[0]   (coefficient = ±2s)
    internal readonly struct SquaredDifferenceBackwardKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> dloss, ArrayView<float> grad, float coefficient) : IElementKernel
    {
        public void Element(int i) => grad[i] += coefficient * dloss[0] * (a[i] - b[i]);
    }

    /// <summary>
    /// Backward of <c>output = scale · Σ x</c>: dx[i] += scale · dloss[0] for every i (dloss: a 1-element
    /// device view). ADDS into <paramref name="dx"/>.
    /// </summary>
    public void SumBackward(ArrayView<float> dloss, ArrayView<float> dx, float scale = 1f)
    {
        if (dloss.Length != 1) throw new ArgumentException($"sum backward: expected a 1-element upstream gradient, got {dloss.Length}");
        if (dx.Length < 1 || dx.Length > int.MaxValue) throw new ArgumentException($"sum backward: expected a gradient of 1 to 2^31 − 1 elements, got {dx.Length}");
        device.LaunchElements((int)dx.Length, new BroadcastAddKernel(dx, dloss, scale));
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
        float coefficient = (withRespectToB ? -2f : 2f) * scale;
        device.LaunchElements((int)a.Length, new SquaredDifferenceBackwardKernel(a, b, dloss, grad, coefficient));
    }
}
