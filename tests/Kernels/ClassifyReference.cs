namespace IlgpuDdpm.Tests.Kernels;

/// <summary>Plain double-precision references of <c>ClassifyKernels</c>.</summary>
public static class ClassifyReference
{
    /// <summary>y[r] = mean of x[r·S .. r·S + S − 1].</summary>
    public static double[] GlobalAveragePool(double[] x, int rows, int spatial)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int j = 0; j < spatial; j++) s += x[r * spatial + j];
            y[r] = s / spatial;
        }
        return y;
    }

    /// <summary>(1/N) Σ_n (log Σ_k exp z_{n,k} − z_{n,y_n}), straight from the definition (shifted by the row max).</summary>
    public static double MeanCrossEntropy(double[] logits, int[] labels, int classes)
    {
        int rows = labels.Length;
        double total = 0;
        for (int n = 0; n < rows; n++)
        {
            double m = double.NegativeInfinity;
            for (int k = 0; k < classes; k++) m = Math.Max(m, logits[n * classes + k]);
            double s = 0;
            for (int k = 0; k < classes; k++) s += Math.Exp(logits[n * classes + k] - m);
            total += m + Math.Log(s) - logits[n * classes + labels[n]];
        }
        return total / rows;
    }
}
