namespace IlgpuDdpm.Tests.Kernels;

/// <summary>Plain double-precision references for the optimizer kernels.</summary>
public static class OptimReference
{
    /// <summary>
    /// One Adam(W) update, in place, in double (Kingma &amp; Ba 2015, Alg. 1, with decoupled weight decay):
    /// m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; m̂ = m/(1−β1^t); v̂ = v/(1−β2^t); p −= lr·(m̂/(√v̂+ε) + wd·p).
    /// </summary>
    public static void Adam(double[] p, double[] g, double[] m, double[] v, long step, double lr,
                            double beta1, double beta2, double eps, double weightDecay)
    {
        double c1 = 1 - Math.Pow(beta1, step);
        double c2 = 1 - Math.Pow(beta2, step);
        for (int i = 0; i < p.Length; i++)
        {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i];
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
            double mHat = m[i] / c1;
            double vHat = v[i] / c2;
            p[i] -= lr * (mHat / (Math.Sqrt(vHat) + eps) + weightDecay * p[i]);
        }
    }

    /// <summary>Σ x².</summary>
    public static double SumOfSquares(float[] x)
    {
        double s = 0;
        foreach (float v in x) s += (double)v * v;
        return s;
    }

    /// <summary>The global norm of many tensors and the clip scale min(1, maxNorm/(norm + 1e-6)).</summary>
    public static (double Norm, double Scale) ClipScale(IEnumerable<float[]> tensors, double maxNorm)
    {
        double norm = Math.Sqrt(tensors.Sum(SumOfSquares));
        return (norm, Math.Min(1, maxNorm / (norm + 1e-6)));
    }

    /// <summary>ema = decay·ema + (1−decay)·p, in place.</summary>
    public static void Ema(double[] ema, double[] p, double decay)
    {
        for (int i = 0; i < ema.Length; i++) ema[i] = decay * ema[i] + (1 - decay) * p[i];
    }
}
