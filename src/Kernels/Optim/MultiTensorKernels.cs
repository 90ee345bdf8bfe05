using ILGPU;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Optim;

/// <summary>
/// The tensors of a flat buffer (a model's gradients, parameter after parameter) cut into the segments the
/// deterministic row reduction uses (<see cref="ReduceKernels.SegmentLength"/> elements; a shorter tensor is one
/// segment), as device tables: segment j covers [SegmentStart[j], SegmentEnd[j]) of the flat buffer, tensor k
/// owns segments [FirstSegment[k], FirstSegment[k + 1]). Built once per model and reused every step.
/// </summary>
public sealed class TensorSegments : IDisposable
{
    private readonly DeviceBuffer<int> segmentStart, segmentEnd, firstSegment;

    /// <summary>The tensors [offsets[k], offsets[k] + lengths[k]) of a flat buffer of <paramref name="flatLength"/> elements.</summary>
    public TensorSegments(ComputeDevice device, IReadOnlyList<int> offsets, IReadOnlyList<int> lengths, int flatLength)
    {
        if (offsets.Count != lengths.Count || offsets.Count == 0)
            throw new ArgumentException($"tensor segments need one offset per length and at least one tensor, got {offsets.Count} offsets and {lengths.Count} lengths");
        var starts = new List<int>();
        var ends = new List<int>();
        var first = new int[offsets.Count + 1];
        for (int k = 0; k < offsets.Count; k++)
        {
            int o = offsets[k], n = lengths[k];
            if (o < 0 || n < 1 || (long)o + n > flatLength)
                throw new ArgumentException($"tensor {k} [{o}, {(long)o + n}) is empty or outside the flat buffer of {flatLength}");
            first[k] = starts.Count;
            for (int s = 0; s < n; s += ReduceKernels.SegmentLength)
            {
                starts.Add(o + s);
                ends.Add(o + Math.Min(n, s + ReduceKernels.SegmentLength));
            }
        }
        first[^1] = starts.Count;
        Tensors = offsets.Count;
        Segments = starts.Count;
        FlatLength = flatLength;
        segmentStart = Upload(device, [.. starts]);
        segmentEnd = Upload(device, [.. ends]);
        firstSegment = Upload(device, first);
    }

    private static DeviceBuffer<int> Upload(ComputeDevice device, int[] values)
    {
        var b = device.Pool.Rent<int>(values.Length);
        b.CopyFrom(values);
        return b;
    }

    /// <summary>Number of tensors.</summary>
    public int Tensors { get; }

    /// <summary>Number of segments over all tensors.</summary>
    public int Segments { get; }

    /// <summary>Length of the flat buffer the tensors lie in.</summary>
    public int FlatLength { get; }

    internal ArrayView<int> SegmentStart => segmentStart.View;
    internal ArrayView<int> SegmentEnd => segmentEnd.View;
    internal ArrayView<int> FirstSegment => firstSegment.View;

    /// <summary>Returns the tables to the pool.</summary>
    public void Dispose()
    {
        segmentStart.Dispose();
        segmentEnd.Dispose();
        firstSegment.Dispose();
    }
}

/// <summary>
/// Multi-tensor kernels: one launch over many tensors of a flat buffer where the per-tensor form needs one per
/// tensor (issue 9). <see cref="SumsOfSquares"/> gives each tensor's Σ x² bit for bit as
/// <see cref="OptimKernels.SumOfSquares"/> does on the per-thread-loop variant of the row reduction (the CPU
/// accelerator's): the same segments, each summed by <see cref="ReduceKernels.LoopSum"/>, then the tensor's
/// segment sums by LoopSum again — so global-norm clipping over a flat gradient buffer changes no bit of a
/// training run on the CPU, and costs two launches instead of one or two per tensor on every device.
/// <see cref="AdamEma"/> is Adam and the weights' EMA in one launch.
/// </summary>
public sealed class MultiTensorKernels : IKernelFamily<MultiTensorKernels>
{
    private readonly ComputeDevice device;

    private MultiTensorKernels(ComputeDevice device) => this.device = device;

    /// <inheritdoc/>
    public static MultiTensorKernels Create(ComputeDevice device) => new(device);

    // Stage 1, unit j = segment j: partials[j] = Σ x[i]² over the segment, in LoopSum's order.
    internal readonly struct SegmentSquaresKernel(ArrayView<float> x, ArrayView<int> start, ArrayView<int> end, ArrayView<float> partials) : IElementKernel
    {
        public void Element(int j) => partials[j] = ReduceKernels.LoopSum(new SquareTerm(x), 0, start[j], end[j]);
    }

    // Stage 2, unit k = tensor k: sums[k] = Σ of its segment partials, in LoopSum's order (one segment: the partial itself).
    internal readonly struct TensorTotalsKernel(ArrayView<float> partials, ArrayView<int> firstSegment, ArrayView<float> sums) : IElementKernel
    {
        public void Element(int k) => sums[k] = ReduceKernels.LoopSum(new ValueTerm(partials), 0, firstSegment[k], firstSegment[k + 1]);
    }

    /// <summary>
    /// sums[k] = Σ x² over tensor k of <paramref name="segments"/>, for every tensor, in two launches; nothing is
    /// read back. <paramref name="scratch"/> holds one float per segment.
    /// </summary>
    public void SumsOfSquares(ArrayView<float> x, TensorSegments segments, ArrayView<float> scratch, ArrayView<float> sums)
    {
        ArgumentNullException.ThrowIfNull(segments);
        if (x.Length != segments.FlatLength)
            throw new ArgumentException($"SumsOfSquares: the flat buffer has {x.Length} elements, the segments were cut for {segments.FlatLength}");
        if (scratch.Length < segments.Segments)
            throw new ArgumentException($"SumsOfSquares: scratch must hold {segments.Segments} partial sums (one per segment), got {scratch.Length}");
        if (sums.Length < segments.Tensors)
            throw new ArgumentException($"SumsOfSquares: sums must hold {segments.Tensors} values (one per tensor), got {sums.Length}");
        // A segment is up to 4096 elements of work: one per simulated thread is already plenty on the CPU.
        device.LaunchElements(device.ElementShape with { MinItemsPerThread = 1 }, segments.Segments,
                              new SegmentSquaresKernel(x, segments.SegmentStart, segments.SegmentEnd, scratch));
        device.LaunchElements(segments.Tensors, new TensorTotalsKernel(scratch, segments.FirstSegment, sums));
    }

    // Adam(W) then the EMA of the new weights, element by element: OptimKernels' two kernels' bodies in one launch
    // (the EMA reads p[j] just written, as the separate EMA launch would), so the numbers are theirs to the bit.
    internal readonly struct AdamEmaKernel(OptimKernels.AdamKernel adam, OptimKernels.EmaKernel ema) : IElementKernel
    {
        public void Element(int j)
        {
            adam.Element(j);
            ema.Element(j);
        }
    }

    /// <summary>
    /// <see cref="OptimKernels.Adam(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, in AdamStep, ArrayView{float}, int)"/>
    /// followed by <see cref="OptimKernels.Ema"/> of the updated weights, fused into one launch over (typically) every
    /// parameter of a model: the gradient is scaled by the device scalar gradScale[scaleIndex] (the clip scale), then
    /// m, v and p are updated in place and ema = decay·ema + (1 − decay)·p.
    /// </summary>
    public void AdamEma(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> firstMoment, ArrayView<float> secondMoment, in AdamStep step,
                        ArrayView<float> gradScale, int scaleIndex, ArrayView<float> ema, float decay)
    {
        // The same checks and bodies as the two separate launches (one place validates them).
        var adam = OptimKernels.ScaledAdamBody(param, grad, firstMoment, secondMoment, step, gradScale, scaleIndex);
        device.LaunchElements(checked((int)param.Length), new AdamEmaKernel(adam, OptimKernels.EmaBody(ema, param, decay)));
    }
}
