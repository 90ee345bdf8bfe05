using IlgpuDdpm.Kernels.Conv;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Plain, obviously correct 2-D convolution in double precision (NCHW, weight [Cout, Cin, K, K], zero
/// padding): the definition written as nested loops, one output element at a time.
/// </summary>
public static class ConvReference
{
    /// <summary>y[n,co,oy,ox] = b[co] + Σ_{ci,ky,kx} w[co,ci,ky,kx]·x[n,ci,oy·s+ky−p, ox·s+kx−p].</summary>
    public static double[] Forward(double[] x, double[] w, double[]? b, ConvShape s)
    {
        var y = new double[s.OutputLength];
        for (int n = 0; n < s.N; n++)
        for (int co = 0; co < s.Cout; co++)
        for (int oy = 0; oy < s.Ho; oy++)
        for (int ox = 0; ox < s.Wo; ox++)
        {
            double sum = b?[co] ?? 0;
            for (int ci = 0; ci < s.Cin; ci++)
            for (int ky = 0; ky < s.K; ky++)
            for (int kx = 0; kx < s.K; kx++)
            {
                int iy = oy * s.Stride + ky - s.Padding, ix = ox * s.Stride + kx - s.Padding;
                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                sum += w[Wi(s, co, ci, ky, kx)] * x[Xi(s, n, ci, iy, ix)];
            }
            y[Yi(s, n, co, oy, ox)] = sum;
        }
        return y;
    }

    /// <summary>dx[n,ci,iy,ix] = Σ_{co,ky,kx} w[co,ci,ky,kx]·dy[n,co,oy,ox] over every (oy, ox) that read x[n,ci,iy,ix].</summary>
    public static double[] BackwardInput(double[] dy, double[] w, ConvShape s)
    {
        var dx = new double[s.InputLength];
        // Scatter form: each output position sends its gradient back to the inputs it read.
        for (int n = 0; n < s.N; n++)
        for (int co = 0; co < s.Cout; co++)
        for (int oy = 0; oy < s.Ho; oy++)
        for (int ox = 0; ox < s.Wo; ox++)
        for (int ci = 0; ci < s.Cin; ci++)
        for (int ky = 0; ky < s.K; ky++)
        for (int kx = 0; kx < s.K; kx++)
        {
            int iy = oy * s.Stride + ky - s.Padding, ix = ox * s.Stride + kx - s.Padding;
            if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
            dx[Xi(s, n, ci, iy, ix)] += w[Wi(s, co, ci, ky, kx)] * dy[Yi(s, n, co, oy, ox)];
        }
        return dx;
    }

    /// <summary>dw[co,ci,ky,kx] = Σ_{n,oy,ox} dy[n,co,oy,ox]·x[n,ci,oy·s+ky−p, ox·s+kx−p].</summary>
    public static double[] BackwardWeight(double[] x, double[] dy, ConvShape s)
    {
        var dw = new double[s.WeightLength];
        for (int co = 0; co < s.Cout; co++)
        for (int ci = 0; ci < s.Cin; ci++)
        for (int ky = 0; ky < s.K; ky++)
        for (int kx = 0; kx < s.K; kx++)
        {
            double sum = 0;
            for (int n = 0; n < s.N; n++)
            for (int oy = 0; oy < s.Ho; oy++)
            for (int ox = 0; ox < s.Wo; ox++)
            {
                int iy = oy * s.Stride + ky - s.Padding, ix = ox * s.Stride + kx - s.Padding;
                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                sum += dy[Yi(s, n, co, oy, ox)] * x[Xi(s, n, ci, iy, ix)];
            }
            dw[Wi(s, co, ci, ky, kx)] = sum;
        }
        return dw;
    }

    /// <summary>db[co] = Σ_{n,oy,ox} dy[n,co,oy,ox].</summary>
    public static double[] BackwardBias(double[] dy, ConvShape s)
    {
        var db = new double[s.Cout];
        for (int n = 0; n < s.N; n++)
        for (int co = 0; co < s.Cout; co++)
        for (int p = 0; p < s.Ho * s.Wo; p++)
            db[co] += dy[(n * s.Cout + co) * s.Ho * s.Wo + p];
        return db;
    }

    private static int Xi(ConvShape s, int n, int c, int y, int x) => ((n * s.Cin + c) * s.H + y) * s.W + x;
    private static int Yi(ConvShape s, int n, int c, int y, int x) => ((n * s.Cout + c) * s.Ho + y) * s.Wo + x;
    private static int Wi(ConvShape s, int co, int ci, int ky, int kx) => ((co * s.Cin + ci) * s.K + ky) * s.K + kx;
}
