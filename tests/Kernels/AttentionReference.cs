namespace IlgpuDdpm.Tests.Kernels;

/// <summary>Plain double-precision softmax and self-attention, written straight from the formulas.</summary>
public static class AttentionReference
{
    /// <summary>y[r, j] = exp(x[r, j] − max_r) / Σ_k exp(x[r, k] − max_r), x [rows, cols].</summary>
    public static double[] Softmax(double[] x, int rows, int cols)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < cols; j++) max = Math.Max(max, x[r * cols + j]);
            double sum = 0;
            for (int j = 0; j < cols; j++) sum += Math.Exp(x[r * cols + j] - max);
            for (int j = 0; j < cols; j++) y[r * cols + j] = Math.Exp(x[r * cols + j] - max) / sum;
        }
        return y;
    }

    /// <summary>
    /// o[n,c,i] = Σ_j softmax_j(Σ_d q[n,d,i]·k[n,d,j] / √C) · v[n,c,j], q, k, v [N, C, L] — computed directly,
    /// with no matrix products or shared code with the device path.
    /// </summary>
    public static double[] Attention(double[] q, double[] k, double[] v, int n, int c, int l)
    {
        var o = new double[n * c * l];
        var w = new double[l];
        double scale = 1 / Math.Sqrt(c);
        for (int b = 0; b < n; b++)
            for (int i = 0; i < l; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < l; j++)
                {
                    double s = 0;
                    for (int d = 0; d < c; d++) s += q[(b * c + d) * l + i] * k[(b * c + d) * l + j];
                    w[j] = s * scale;
                    max = Math.Max(max, w[j]);
                }
                double sum = 0;
                for (int j = 0; j < l; j++) { w[j] = Math.Exp(w[j] - max); sum += w[j]; }
                for (int d = 0; d < c; d++)
                {
                    double acc = 0;
                    for (int j = 0; j < l; j++) acc += w[j] / sum * v[(b * c + d) * l + j];
                    o[(b * c + d) * l + i] = acc;
                }
            }
        return o;
    }
}
