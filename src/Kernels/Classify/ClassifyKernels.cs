using ILGPU;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Classify;

/// <summary>
/// The kernels a classifier needs beyond the U-Net's: global average pooling and fused log-softmax +
/// cross-entropy, each forward next to its backward. Used by the evaluation classifier (DESIGN.md §1,
/// <c>src/Diffusion/Evaluation</c>).
/// <para>
/// Parallelisation as in <see cref="ElementwiseKernels"/>: grid-stride loops sized by <see cref="GridStride"/>.
/// Every reduction is one thread per output in a fixed order (4 interleaved accumulators): no atomics, so
/// results are bit-for-bit repeatable. Backward methods ADD into their gradient outputs.
/// </para>
/// </summary>
public sealed class ClassifyKernels : GridStrideFamily, IKernelFamily<ClassifyKernels>
{
    /// <summary>Self-check probes (Checks/SelfCheck.cs): pooling over odd spatial sizes, cross-entropy over a few class counts.
    /// Tolerance as Elementwise's (the GPU's exp and log are approximate).</summary>
    public static KernelProbes Probes { get; } = new("Classify", 1e-3, [.. new[] { (6, 49), (5, 10), (64, 3) }.Select(s =>
        new KernelProbe($"GlobalAveragePool, SoftmaxCrossEntropy and backwards {s}", k =>
        {
            var (f, (rows, cols)) = (k.Kernels<ClassifyKernels>(), s);
            f.GlobalAveragePool(k.In(rows * cols).View, k.Out(rows).View, rows, cols);
            f.GlobalAveragePoolBackward(k.In(rows).View, k.Acc(rows * cols).View, rows, cols);
            var labels = k.Upload(Enumerable.Range(0, rows).Select(r => (r * 7) % cols).ToArray());
            var probs = k.Out(rows * cols);
            f.SoftmaxCrossEntropy(k.In(rows * cols, -4f, 4f).View, labels.View, k.Out(rows).View, probs.View, k.Out(1).View, rows, cols);
            f.SoftmaxCrossEntropyBackward(probs.View, labels.View, k.In(1).View, k.Acc(rows * cols).View, rows, cols);
        }))]);

    private readonly ReduceKernels reduce;

    private ClassifyKernels(ComputeDevice device, GridStride launch) : base(device, launch) => reduce = device.Kernels<ReduceKernels>();

    /// <inheritdoc/>
    public static ClassifyKernels Create(ComputeDevice device) => new(device, device.ElementShape);

    /// <summary>A family with a chosen launch shape (tests run the GPU's, and odd ones, on the CPU).</summary>
    internal static ClassifyKernels CreateWith(ComputeDevice device, GridStride launch) => new(device, launch);

    // ---------------------------------------------------------------------------------------------
    // Global average pooling: x [N,C,H,W] -> y [N,C],  y[r] = (1/S) Σ_{j<S} x[r·S + j],  S = H·W, r = n·C + c
    // (a row reduction of ReduceKernels).
    // dx[e] += dy[e / S] / S   (one unit per input element)
    internal readonly struct GlobalAveragePoolBackwardKernel(ArrayView<float> dy, ArrayView<float> dx, int spatial) : IElementKernel
    {
        public void Element(int e) => dx[e] += dy[e / spatial] * (1f / spatial);
    }

    // ---------------------------------------------------------------------------------------------
    // Softmax cross-entropy, one unit per row of logits z [N,K] with integer labels y [N]:
    //   m = max_k z_k,  lse = m + log Σ_k exp(z_k − m)      (log-sum-exp, shifted so exp never overflows)
    //   rowLoss[n] = lse − z_{y_n} = −log softmax(z)_{y_n},  probs[n,k] = exp(z_k − lse)
    // The mean over rows is taken by ReduceKernels.Sum (deterministic).

    // One unit per row r.
    internal readonly struct SoftmaxCrossEntropyKernel(ArrayView<float> logits, ArrayView<int> labels, ArrayView<float> rowLoss, ArrayView<float> probs, int classes) : IElementKernel
    {
        public void Element(int r)
        {
            int start = r * classes;
            float m = logits[start];
            for (int k = 1; k < classes; k++) m = MathF.Max(m, logits[start + k]);
            float sum = 0f;
            for (int k = 0; k < classes; k++) sum += MathF.Exp(logits[start + k] - m);
            float lse = m + MathF.Log(sum);
            for (int k = 0; k < classes; k++) probs[start + k] = MathF.Exp(logits[start + k] - lse);
            rowLoss[r] = lse - logits[start + labels[r]];
        }
    }

    // d/dz_{n,k} of L = scale · Σ_n rowLoss[n]:  dz[n,k] += scale · dloss · (p_{n,k} − [k = y_n])   (one unit per logit)
    internal readonly struct SoftmaxCrossEntropyBackwardKernel(ArrayView<float> probs, ArrayView<int> labels, ArrayView<float> dloss, ArrayView<float> dlogits, float scale, int classes) : IElementKernel
    {
        public void Element(int e)
        {
            float g = scale * dloss[0];
            int r = e / classes;
            int k = e - r * classes;
            float target = k == labels[r] ? 1f : 0f;
            dlogits[e] += g * (probs[e] - target);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Launch methods

    /// <summary>Global average pooling: x [rows·spatial] (rows = N·C, spatial = H·W) → y [rows].</summary>
    public void GlobalAveragePool(ArrayView<float> x, ArrayView<float> y, int rows, int spatial)
    {
        CheckPositive(rows, spatial, "global average pool");
        Expect(x, (long)rows * spatial, "global average pool x");
        Expect(y, rows, "global average pool y");
        reduce.Rows(new ValueTerm(x), new StoreSink(y, 0, 1f / spatial), rows, spatial);
    }

    /// <summary>Backward of <see cref="GlobalAveragePool"/>: dx[r·S + j] += dy[r] / S. ADDS into <paramref name="dx"/>.</summary>
    public void GlobalAveragePoolBackward(ArrayView<float> dy, ArrayView<float> dx, int rows, int spatial)
    {
        CheckPositive(rows, spatial, "global average pool backward");
        Expect(dy, rows, "global average pool dy");
        Expect(dx, (long)rows * spatial, "global average pool dx");
        int n = checked(rows * spatial);
        Run(n, new GlobalAveragePoolBackwardKernel(dy, dx, spatial));
    }

    /// <summary>
    /// Mean softmax cross-entropy of logits [rows, classes] against <paramref name="labels"/> [rows] (each in
    /// 0..classes−1): loss[0] = (1/rows) Σ_n (log Σ_k exp z_{n,k} − z_{n,y_n}). Writes the per-row losses and the
    /// softmax probabilities (which the backward reuses).
    /// </summary>
    public void SoftmaxCrossEntropy(ArrayView<float> logits, ArrayView<int> labels, ArrayView<float> rowLoss, ArrayView<float> probs, ArrayView<float> loss, int rows, int classes)
    {
        CheckPositive(rows, classes, "softmax cross-entropy");
        Expect(logits, (long)rows * classes, "softmax cross-entropy logits");
        Expect(probs, (long)rows * classes, "softmax cross-entropy probs");
        if (labels.Length != rows) throw new ArgumentException($"softmax cross-entropy labels: expected {rows} elements, got {labels.Length}");
        Expect(rowLoss, rows, "softmax cross-entropy row losses");
        Expect(loss, 1, "softmax cross-entropy loss");
        Run(rows, new SoftmaxCrossEntropyKernel(logits, labels, rowLoss, probs, classes));
        reduce.Sum(rowLoss, loss, 1f / rows);
    }

    /// <summary>
    /// Backward of <see cref="SoftmaxCrossEntropy"/>: dlogits[n,k] += dloss[0]/rows · (p_{n,k} − [k = y_n]).
    /// ADDS into <paramref name="dlogits"/>.
    /// </summary>
    public void SoftmaxCrossEntropyBackward(ArrayView<float> probs, ArrayView<int> labels, ArrayView<float> dloss, ArrayView<float> dlogits, int rows, int classes)
    {
        CheckPositive(rows, classes, "softmax cross-entropy backward");
        Expect(probs, (long)rows * classes, "softmax cross-entropy probs");
        Expect(dlogits, (long)rows * classes, "softmax cross-entropy dlogits");
        Expect(dloss, 1, "softmax cross-entropy dloss");
        if (labels.Length != rows) throw new ArgumentException($"softmax cross-entropy labels: expected {rows} elements, got {labels.Length}");
        int n = checked(rows * classes);
        Run(n, new SoftmaxCrossEntropyBackwardKernel(probs, labels, dloss, dlogits, 1f / rows, classes));
    }

    private static void CheckPositive(int a, int b, string what)
    {
        if (a <= 0 || b <= 0) throw new ArgumentException($"{what}: dimensions must be positive, got {a} and {b}");
        if ((long)a * b > int.MaxValue) throw new ArgumentException($"{what}: {a}·{b} elements exceed 2^31 (32-bit indices)");
    }

    private static void Expect<T>(ArrayView<T> view, long expected, string what) where T : unmanaged
    {
        if (view.Length != expected) throw new ArgumentException($"{what}: expected {expected} elements, got {view.Length}");
    }
}
