namespace IlgpuDdpm.Tests.Kernels;

/// <summary>Plain double-precision group normalisation, written for clarity, not speed.</summary>
public static class NormReference
{
    /// <summary>
    /// x [n, c, s] -> y [n, c, s]; mean and rstd [n, g]. Per (n, g) over its c/g·s values:
    /// μ = mean, σ² = biased variance, rstd = 1/√(σ² + eps), y = (x − μ)·rstd·γ[c] + β[c].
    /// </summary>
    public static (double[] Y, double[] Mean, double[] Rstd) GroupNorm(double[] x, double[] gamma, double[] beta, int n, int c, int g, int s, double eps)
    {
        int cg = c / g;
        var y = new double[n * c * s];
        var mean = new double[n * g];
        var rstd = new double[n * g];
        for (int b = 0; b < n; b++)
            for (int grp = 0; grp < g; grp++)
            {
                double sum = 0;
                for (int ch = grp * cg; ch < (grp + 1) * cg; ch++)
                    for (int i = 0; i < s; i++) sum += x[(b * c + ch) * s + i];
                double mu = sum / (cg * s);
                double sq = 0;
                for (int ch = grp * cg; ch < (grp + 1) * cg; ch++)
                    for (int i = 0; i < s; i++) { double d = x[(b * c + ch) * s + i] - mu; sq += d * d; }
                double r = 1 / Math.Sqrt(sq / (cg * s) + eps);
                mean[b * g + grp] = mu;
                rstd[b * g + grp] = r;
                for (int ch = grp * cg; ch < (grp + 1) * cg; ch++)
                    for (int i = 0; i < s; i++)
                    {
                        int at = (b * c + ch) * s + i;
                        y[at] = (x[at] - mu) * r * gamma[ch] + beta[ch];
                    }
            }
        return (y, mean, rstd);
    }

    /// <summary>
    /// The analytic vector–Jacobian product of <see cref="GroupNorm"/> for upstream dy: with x̂ = (x − μ)·rstd
    /// and g = dy·γ, dx = rstd·(g − mean_group(g) − x̂·mean_group(g·x̂)), dγ[c] = Σ dy·x̂, dβ[c] = Σ dy.
    /// (Checked against finite differences in the tests.)
    /// </summary>
    public static (double[] Dx, double[] Dgamma, double[] Dbeta) GroupNormBackward(double[] x, double[] gamma, double[] dy, int n, int c, int g, int s, double eps)
    {
        var (_, mean, rstd) = GroupNorm(x, gamma, new double[c], n, c, g, s, eps);
        int cg = c / g, m = cg * s;
        var dx = new double[x.Length];
        var dgamma = new double[c];
        var dbeta = new double[c];
        for (int b = 0; b < n; b++)
            for (int grp = 0; grp < g; grp++)
            {
                double mu = mean[b * g + grp], r = rstd[b * g + grp];
                double sumG = 0, sumGx = 0;
                for (int ch = grp * cg; ch < (grp + 1) * cg; ch++)
                    for (int i = 0; i < s; i++)
                    {
                        int at = (b * c + ch) * s + i;
                        double xhat = (x[at] - mu) * r;
                        sumG += dy[at] * gamma[ch];
                        sumGx += dy[at] * gamma[ch] * xhat;
                        dgamma[ch] += dy[at] * xhat;
                        dbeta[ch] += dy[at];
                    }
                for (int ch = grp * cg; ch < (grp + 1) * cg; ch++)
                    for (int i = 0; i < s; i++)
                    {
                        int at = (b * c + ch) * s + i;
                        double xhat = (x[at] - mu) * r;
                        dx[at] = r * (dy[at] * gamma[ch] - sumG / m - xhat * sumGx / m);
                    }
            }
        return (dx, dgamma, dbeta);
    }
}
