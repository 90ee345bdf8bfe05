using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Attention;

/// <summary>
/// Row softmax and its backward — the attention-specific part of single-head self-attention (DESIGN.md §4);
/// the two products <c>qᵀk</c> and <c>v·wᵀ</c> are <see cref="Matmul.MatmulKernels"/> GEMMs. One thread
/// per row, each sum taken in a fixed order: deterministic, no atomics.
/// </summary>
public sealed class AttentionKernels(ComputeDevice device) : IKernelFamily<AttentionKernels>
{
    /// <summary>Self-check probes: softmax rows. Tolerance: exp is approximate on GPUs; backward row sums.</summary>
    public static KernelProbes Probes { get; } = new("Attention", 1e-4, [.. new[] { (196, 196), (64, 49), (5, 1000) }.Select(s =>
        new KernelProbe($"Softmax forward+backward [{s.Item1},{s.Item2}]", k =>
        {
            var (attention, n) = (k.Kernels<AttentionKernels>(), s.Item1 * s.Item2);
            var y = k.Out(n);
            attention.SoftmaxForward(k.In(n, -8f, 8f).View, y.View, s.Item1, s.Item2);
            attention.SoftmaxBackward(y.View, k.In(n).View, k.Acc(n, -1e-3f, 1e-3f).View, s.Item1, s.Item2);
        }))]);

    /// <inheritdoc/>
    public static AttentionKernels Create(ComputeDevice device) => new(device);

    /// <summary>
    /// Softmax over each row of <paramref name="x"/> [rows, cols] into <paramref name="y"/> [rows, cols]:
    /// <c>y[r,j] = exp(x[r,j] − max_k x[r,k]) / Σ_k exp(x[r,k] − max_k x[r,k])</c>. y may be x (in place).
    /// </summary>
    public void SoftmaxForward(ArrayView<float> x, ArrayView<float> y, int rows, int cols)
    {
        CheckRows(x, rows, cols, "x");
        CheckRows(y, rows, cols, "y");
        device.Launch(rows, new SoftmaxForwardKernel(x, y, cols));
    }

    /// <summary>
    /// Backward of <see cref="SoftmaxForward"/> from its output <paramref name="y"/> and upstream gradient
    /// <paramref name="dy"/>: <c>dx[r,j] += y[r,j]·(dy[r,j] − Σ_k dy[r,k]·y[r,k])</c>.
    /// ADDS into <paramref name="dx"/> (all three [rows, cols]).
    /// </summary>
    public void SoftmaxBackward(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int rows, int cols)
    {
        CheckRows(y, rows, cols, "y");
        CheckRows(dy, rows, cols, "dy");
        CheckRows(dx, rows, cols, "dx");
        device.Launch(rows, new SoftmaxBackwardKernel(y, dy, dx, cols));
    }

    private static void CheckRows(ArrayView<float> view, int rows, int cols, string name)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentException($"softmax: rows and cols must be positive, got {rows}×{cols}");
        if (view.Length != (long)rows * cols)
            throw new ArgumentException($"softmax: {name} must be [{rows}, {cols}] = {(long)rows * cols} elements, got {view.Length}");
    }

    // x [rows, cols] -> y [rows, cols]; one thread per row, its sums in the reduction's loop order (ReduceKernels.LoopSum).
    // y = exp(x − m)/Σ exp(x − m), m = row max (numerically stable: every exponent ≤ 0, the sum ≥ 1).
    internal readonly struct SoftmaxForwardKernel(ArrayView<float> x, ArrayView<float> y, int cols) : IThreadKernel
    {
        public void Execute(int row)
        {
            int start = row * cols, end = start + cols;
            float m = x[start];
            for (int i = start + 1; i < end; i++) m = MathF.Max(m, x[i]);
            for (int i = start; i < end; i++) y[i] = MathF.Exp(x[i] - m);
            float inv = 1f / ReduceKernels.LoopSum(new ValueTerm(y), row, start, end);
            for (int i = start; i < end; i++) y[i] *= inv;
        }
    }

    // dy[i]·y[i].
    internal readonly struct ProductTerm(ArrayView<float> a, ArrayView<float> b) : IReductionTerm
    {
        public float At(int row, int i) => a[i] * b[i];
    }

    // y, dy [rows, cols] -> dx [rows, cols] +=; one thread per row.
    // Softmax Jacobian ∂y_j/∂x_i = y_j(δ_ij − y_i), so dx_i = y_i·(dy_i − Σ_j dy_j·y_j).
    internal readonly struct SoftmaxBackwardKernel(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int cols) : IThreadKernel
    {
        public void Execute(int row)
        {
            int start = row * cols, end = start + cols;
            float dot = ReduceKernels.LoopSum(new ProductTerm(dy, y), row, start, end);
            for (int i = start; i < end; i++) dx[i] += y[i] * (dy[i] - dot);
        }
    }
}
