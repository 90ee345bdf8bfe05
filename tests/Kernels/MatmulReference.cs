namespace IlgpuDdpm.Tests.Kernels;

/// <summary>Plain double-precision matrix products: the obviously correct versions of MatmulKernels and MatmulOps.</summary>
public static class MatmulReference
{
    /// <summary>op(A) element (i, k) of batch <paramref name="batch"/>: A is [B,M,K], or [B,K,M] when transposed.</summary>
    public static double OpA(double[] a, int batch, int m, int k, bool transpose, int i, int kk) =>
        transpose ? a[(batch * k + kk) * m + i] : a[(batch * m + i) * k + kk];

    /// <summary>op(B) element (k, j): B is [B,K,N], or [B,N,K] when transposed.</summary>
    public static double OpB(double[] b, int batch, int k, int n, bool transpose, int kk, int j) =>
        transpose ? b[(batch * n + j) * k + kk] : b[(batch * k + kk) * n + j];

    /// <summary>
    /// c[b,i,j] = alpha·Σ_k op(A)[b,i,k]·op(B)[b,k,j] + bias[j] + c0[b,i,j] (bias and c0 optional).
    /// </summary>
    public static double[] Gemm(double[] a, double[] b, int batch, int m, int n, int k, bool transposeA, bool transposeB,
                                double alpha = 1, double[]? bias = null, double[]? c0 = null)
    {
        var c = new double[batch * m * n];
        for (int p = 0; p < batch; p++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int kk = 0; kk < k; kk++)
                        s += OpA(a, p, m, k, transposeA, i, kk) * OpB(b, p, k, n, transposeB, kk, j);
                    int at = (p * m + i) * n + j;
                    c[at] = alpha * s + (bias?[j] ?? 0) + (c0?[at] ?? 0);
                }
        return c;
    }

    /// <summary>y[r, o] = Σ_i x[r, i]·w[o, i] + bias[o]: x [rows, in], w [out, in].</summary>
    public static double[] Linear(double[] x, double[] w, double[]? bias, int rows, int inFeatures, int outFeatures)
    {
        var y = new double[rows * outFeatures];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outFeatures; o++)
            {
                double s = bias?[o] ?? 0;
                for (int i = 0; i < inFeatures; i++) s += x[r * inFeatures + i] * w[o * inFeatures + i];
                y[r * outFeatures + o] = s;
            }
        return y;
    }

    /// <summary>s[j] = Σ_r dy[r, j] (+ s0[j]).</summary>
    public static double[] ColumnSums(double[] dy, int rows, int cols, double[]? s0 = null)
    {
        var s = new double[cols];
        for (int j = 0; j < cols; j++)
        {
            double t = s0?[j] ?? 0;
            for (int r = 0; r < rows; r++) t += dy[r * cols + j];
            s[j] = t;
        }
        return s;
    }
}
