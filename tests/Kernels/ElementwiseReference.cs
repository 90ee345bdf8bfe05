using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Plain double-precision references for the elementwise and resample kernels: one loop per formula,
/// indices written out, nothing clever.
/// </summary>
public static class ElementwiseReference
{
    public static double Sigmoid(double x) => 1.0 / (1.0 + Math.Exp(-x));

    /// <summary>y = x·σ(x).</summary>
    public static double[] Silu(double[] x) => Array.ConvertAll(x, v => v * Sigmoid(v));

    /// <summary>GELU, tanh approximation as PyTorch's approximate='tanh': ½x(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    public static double[] Gelu(double[] x) => Array.ConvertAll(x, v => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))));

    /// <summary>y = a + b.</summary>
    public static double[] Add(double[] a, double[] b)
    {
        var y = new double[a.Length];
        for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
        return y;
    }

    /// <summary>y = s·x.</summary>
    public static double[] Scale(double[] x, double s) => Array.ConvertAll(x, v => s * v);

    /// <summary>x [N,C,S], v [N,C] → y[n,c,s] = x[n,c,s] + v[n,c].</summary>
    public static double[] AddChannelVector(double[] x, double[] v, int n, int c, int spatial)
    {
        var y = new double[n * c * spatial];
        for (int b = 0; b < n; b++)
            for (int ch = 0; ch < c; ch++)
                for (int s = 0; s < spatial; s++)
                {
                    int i = (b * c + ch) * spatial + s;
                    y[i] = x[i] + v[b * c + ch];
                }
        return y;
    }

    /// <summary>a [N,Ca,S] ++ b [N,Cb,S] → y [N,Ca+Cb,S], a first.</summary>
    public static double[] Concat(double[] a, double[] b, int n, int ca, int cb, int spatial)
    {
        int ct = ca + cb;
        var y = new double[n * ct * spatial];
        for (int bt = 0; bt < n; bt++)
            for (int ch = 0; ch < ct; ch++)
                for (int s = 0; s < spatial; s++)
                    y[(bt * ct + ch) * spatial + s] = ch < ca
                        ? a[(bt * ca + ch) * spatial + s]
                        : b[(bt * cb + (ch - ca)) * spatial + s];
        return y;
    }

    /// <summary>x [N,C,H,W] → y [N,C,2H,2W], y[n,c,y,x] = x[n,c,y/2,x/2].</summary>
    public static double[] Upsample2x(double[] x, int n, int c, int h, int w)
    {
        var y = new double[n * c * 4 * h * w];
        for (int nc = 0; nc < n * c; nc++)
            for (int oy = 0; oy < 2 * h; oy++)
                for (int ox = 0; ox < 2 * w; ox++)
                    y[(nc * 2 * h + oy) * 2 * w + ox] = x[(nc * h + oy / 2) * w + ox / 2];
        return y;
    }

    /// <summary>Whether dropout keeps element i: Philox.Uniform(key, offset + i) ≥ p.</summary>
    public static bool Kept(PhiloxKey key, int i, float p) =>
        Philox.Uniform(key.Seed, key.Stream, key.Offset + (ulong)i) >= p;

    /// <summary>Inverted dropout: y_i = x_i / (1 − p) if kept, else 0.</summary>
    public static double[] Dropout(double[] x, float p, PhiloxKey key)
    {
        var y = new double[x.Length];
        double scale = 1.0 / (1.0 - p);
        for (int i = 0; i < x.Length; i++) y[i] = Kept(key, i, p) ? x[i] * scale : 0.0;
        return y;
    }

    /// <summary>Row i = [sin(t_i f_0..f_{half−1}), cos(t_i f_0..f_{half−1})], f_j = exp(−ln(10000)·j/(half−1)).</summary>
    public static double[] TimestepSinusoid(int[] t, int dim)
    {
        int half = dim / 2;
        var y = new double[t.Length * dim];
        for (int r = 0; r < t.Length; r++)
            for (int j = 0; j < half; j++)
            {
                double phase = t[r] * Frequency(j, half);
                y[r * dim + j] = Math.Sin(phase);
                y[r * dim + half + j] = Math.Cos(phase);
            }
        return y;
    }

    /// <summary>f_j = exp(−ln(10000)·j/(half − 1)).</summary>
    public static double Frequency(int j, int half) => Math.Exp(-Math.Log(10000.0) * j / (half - 1));
}
