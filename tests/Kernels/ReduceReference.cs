namespace IlgpuDdpm.Tests.Kernels;

/// <summary>Plain double-precision reductions.</summary>
public static class ReduceReference
{
    /// <summary>Σ x in double.</summary>
    public static double Sum(float[] x)
    {
        double s = 0;
        foreach (var v in x) s += v;
        return s;
    }

    /// <summary>Σ |x| in double (the scale of a summation's rounding error).</summary>
    public static double SumAbs(float[] x)
    {
        double s = 0;
        foreach (var v in x) s += Math.Abs(v);
        return s;
    }

    /// <summary>Σ (a − b)² in double.</summary>
    public static double SumOfSquaredDifferences(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) { double d = (double)a[i] - b[i]; s += d * d; }
        return s;
    }
}
