using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

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

    // x [rows, cols] -> y [rows, cols]; one thread per row.
    // y = exp(x − m)/Σ exp(x − m), m = row max (numerically stable: every exponent ≤ 0, the sum ≥ 1).
    internal readonly struct SoftmaxForwardKernel(ArrayView<float> x, ArrayView<float> y, int cols) : IThreadKernel
    {
        public void Execute(int row)
        {
            int start = row * cols, end = start + cols;
            float m = x[start];
            for (int i = start + 1; i < end; i++) m = MathF.Max(m, x[i]);

            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int j = start;
            for (; j + 4 <= end; j += 4)
            {
                float e0 = MathF.Exp(x[j] - m);
                float e1 = MathF.Exp(x[j + 1] - m);
                float e2 = MathF.Exp(x[j + 2] - m);
                float e3 = MathF.Exp(x[j + 3] - m);
                y[j] = e0; y[j + 1] = e1; y[j + 2] = e2; y[j + 3] = e3;
                s0 += e0; s1 += e1; s2 += e2; s3 += e3;
            }
            for (; j < end; j++)
            {
                float e = MathF.Exp(x[j] - m);
                y[j] = e;
                s0 += e;
            }

            float inv = 1f / ((s0 + s1) + (s2 + s3));
            for (int i = start; i < end; i++) y[i] *= inv;
        }
    }

    // y, dy [rows, cols] -> dx [rows, cols] +=; one thread per row.
    // Softmax Jacobian ∂y_j/∂x_i = y_j(δ_ij − y_i), so dx_i = y_i·(dy_i − Σ_j dy_j·y_j).
    internal readonly struct SoftmaxBackwardKernel(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int cols) : IThreadKernel
    {
        public void Execute(int row)
        {
            int start = row * cols, end = start + cols;
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int j = start;
            for (; j + 4 <= end; j += 4)
            {
                s0 += dy[j] * y[j];
                s1 += dy[j + 1] * y[j + 1];
                s2 += dy[j + 2] * y[j + 2];
                s3 += dy[j + 3] * y[j + 3];
            }
            for (; j < end; j++) s0 += dy[j] * y[j];
            float dot = (s0 + s1) + (s2 + s3);
            for (int i = start; i < end; i++) dx[i] += y[i] * (dy[i] - dot);
        }
    }
}
