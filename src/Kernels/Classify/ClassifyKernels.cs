using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
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
public sealed class ClassifyKernels : IKernelFamily<ClassifyKernels>
{
    private readonly ComputeDevice device;
    private readonly ReduceKernels reduce;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int, int> pool;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int, int> poolBackward;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int> crossEntropy;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, float, int, int, int> crossEntropyBackward;

    private ClassifyKernels(ComputeDevice device, GridStride launch)
    {
        this.device = device;
        reduce = device.Kernels<ReduceKernels>();
        Launch = launch;
        pool = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int, int>(GlobalAveragePoolKernel);
        poolBackward = device.LoadStreamingKernel<ArrayView<float>, ArrayView<float>, int, int, int>(GlobalAveragePoolBackwardKernel);
        crossEntropy = device.LoadStreamingKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(SoftmaxCrossEntropyKernel);
        crossEntropyBackward = device.LoadStreamingKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, float, int, int, int>(SoftmaxCrossEntropyBackwardKernel);
    }

    /// <inheritdoc/>
    public static ClassifyKernels Create(ComputeDevice device) => new(device, GridStride.For(device));

    /// <summary>A family with a chosen launch shape (tests run the GPU's, and odd ones, on the CPU).</summary>
    internal static ClassifyKernels CreateWith(ComputeDevice device, GridStride launch) => new(device, launch);

    /// <summary>How launches are sized.</summary>
    internal GridStride Launch { get; }

    private int Threads(int units) => Launch.Threads(units);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Next(int e, int stride, int n) => e < n - stride ? e + stride : n;

    // ---------------------------------------------------------------------------------------------
    // Global average pooling: x [N,C,H,W] -> y [N,C],  y[r] = (1/S) Σ_{j<S} x[r·S + j],  S = H·W, r = n·C + c.

    internal static void GlobalAveragePoolKernel(Index1D i, ArrayView<float> x, ArrayView<float> y, int spatial, int rows, int stride)
    {
        float inv = 1f / spatial;
        for (int r = i.X; r < rows; r = Next(r, stride, rows))
        {
            int start = r * spatial;
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int j = 0;
            for (; j + 4 <= spatial; j += 4)
            {
                s0 += x[start + j];
                s1 += x[start + j + 1];
                s2 += x[start + j + 2];
                s3 += x[start + j + 3];
            }
            for (; j < spatial; j++) s0 += x[start + j];
            y[r] = ((s0 + s1) + (s2 + s3)) * inv;
        }
    }

    // dx[e] += dy[e / S] / S   (one unit per input element)
    internal static void GlobalAveragePoolBackwardKernel(Index1D i, ArrayView<float> dy, ArrayView<float> dx, int spatial, int n, int stride)
    {
        float inv = 1f / spatial;
        for (int e = i.X; e < n; e = Next(e, stride, n)) dx[e] += dy[e / spatial] * inv;
    }

    // ---------------------------------------------------------------------------------------------
    // Softmax cross-entropy, one unit per row of logits z [N,K] with integer labels y [N]:
    //   m = max_k z_k,  lse = m + log Σ_k exp(z_k − m)      (log-sum-exp, shifted so exp never overflows)
    //   rowLoss[n] = lse − z_{y_n} = −log softmax(z)_{y_n},  probs[n,k] = exp(z_k − lse)
    // The mean over rows is taken by ReduceKernels.Sum (deterministic).

    internal static void SoftmaxCrossEntropyKernel(Index1D i, ArrayView<float> logits, ArrayView<int> labels, ArrayView<float> rowLoss, ArrayView<float> probs, int classes, int rows, int stride)
    {
        for (int r = i.X; r < rows; r = Next(r, stride, rows))
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
    internal static void SoftmaxCrossEntropyBackwardKernel(Index1D i, ArrayView<float> probs, ArrayView<int> labels, ArrayView<float> dloss, ArrayView<float> dlogits, float scale, int classes, int n, int stride)
    {
        float g = scale * dloss[0];
        for (int e = i.X; e < n; e = Next(e, stride, n))
        {
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
        pool(device.Stream, Threads(rows), x, y, spatial, rows, Threads(rows));
    }

    /// <summary>Backward of <see cref="GlobalAveragePool"/>: dx[r·S + j] += dy[r] / S. ADDS into <paramref name="dx"/>.</summary>
    public void GlobalAveragePoolBackward(ArrayView<float> dy, ArrayView<float> dx, int rows, int spatial)
    {
        CheckPositive(rows, spatial, "global average pool backward");
        Expect(dy, rows, "global average pool dy");
        Expect(dx, (long)rows * spatial, "global average pool dx");
        int n = checked(rows * spatial);
        poolBackward(device.Stream, Threads(n), dy, dx, spatial, n, Threads(n));
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
        crossEntropy(device.Stream, Threads(rows), logits, labels, rowLoss, probs, classes, rows, Threads(rows));
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
        crossEntropyBackward(device.Stream, Threads(n), probs, labels, dloss, dlogits, 1f / rows, classes, n, Threads(n));
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
