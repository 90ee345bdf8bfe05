namespace IlgpuDdpm.Diffusion.Evaluation;

/// <summary>
/// The Fréchet classifier distance (FCD) and the kernel inception distance (KID) of two sets of features,
/// computed on the host in float64. FCD is the Fréchet (2-Wasserstein) distance of the Gaussians fitted
/// to each set (Heusel et al. 2017, eq. 6):
/// <code>d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½</code>
/// where the last trace (= tr (Σ₁Σ₂)^½) is taken through two symmetric eigendecompositions, so it stays
/// real and exact for positive semi-definite Σ. KID (Bińkowski et al. 2018) is the unbiased squared MMD
/// with the cubic polynomial kernel k(x, y) = (xᵀy/d + 1)³, averaged over random subsets.
/// </summary>
public static class FeatureStatistics
{
    /// <summary>Mean [d] and covariance [d, d] (unbiased, divided by n − 1) of <paramref name="n"/> rows of <paramref name="d"/> features.</summary>
    public static (double[] Mean, double[,] Covariance) MeanAndCovariance(ReadOnlySpan<double> features, int n, int d)
    {
        if (n < 2) throw new ArgumentException($"statistics need at least 2 feature vectors, got {n}");
        if (features.Length != (long)n * d) throw new ArgumentException($"expected {n}x{d} = {(long)n * d} features, got {features.Length}");
        var mean = new double[d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) mean[j] += features[i * d + j];
        for (int j = 0; j < d; j++) mean[j] /= n;
        var cov = new double[d, d];
        var centred = new double[d];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < d; j++) centred[j] = features[i * d + j] - mean[j];
            for (int a = 0; a < d; a++)
            {
                double ca = centred[a];
                for (int b = a; b < d; b++) cov[a, b] += ca * centred[b];
            }
        }
        for (int a = 0; a < d; a++)
            for (int b = a; b < d; b++)
            {
                cov[a, b] /= n - 1;
                cov[b, a] = cov[a, b];
            }
        return (mean, cov);
    }

    /// <summary>The Fréchet distance of two Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂) (see the class remarks).</summary>
    public static double FrechetDistance(double[] mean1, double[,] cov1, double[] mean2, double[,] cov2)
    {
        int d = mean1.Length;
        if (mean2.Length != d || cov1.GetLength(0) != d || cov1.GetLength(1) != d || cov2.GetLength(0) != d || cov2.GetLength(1) != d)
            throw new ArgumentException($"Fréchet distance: means and covariances must all be of dimension {d}");
        double meanTerm = 0;
        for (int j = 0; j < d; j++) meanTerm += (mean1[j] - mean2[j]) * (mean1[j] - mean2[j]);
        double trace1 = 0, trace2 = 0;
        for (int j = 0; j < d; j++) { trace1 += cov1[j, j]; trace2 += cov2[j, j]; }
        var root1 = SymmetricSqrt(cov1);
        var product = Multiply(Multiply(root1, cov2), root1);
        Symmetrize(product);
        var (values, _) = SymmetricEigen(product);
        double traceRoot = 0;
        foreach (var v in values) traceRoot += Math.Sqrt(Math.Max(v, 0));
        // Rounding can leave a tiny negative number when both Gaussians are the same.
        return Math.Max(0, meanTerm + trace1 + trace2 - 2 * traceRoot);
    }

    /// <summary>The Fréchet distance of the Gaussians fitted to two feature sets ([n, d] and [m, d], row-major).</summary>
    public static double FrechetDistance(ReadOnlySpan<double> a, int n, ReadOnlySpan<double> b, int m, int d)
    {
        var (mu1, s1) = MeanAndCovariance(a, n, d);
        var (mu2, s2) = MeanAndCovariance(b, m, d);
        return FrechetDistance(mu1, s1, mu2, s2);
    }

    /// <summary>
    /// KID: the unbiased squared MMD of the cubic polynomial kernel between <paramref name="subsets"/> pairs of
    /// random subsets of size min(<paramref name="subsetSize"/>, n, m) (without replacement within a subset),
    /// drawn from <paramref name="seed"/>: per subset
    /// <code>MMD²_u = (Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)) / (s(s−1)) − 2 Σ_{i,j} k(x_i,y_j) / s²</code>
    /// Returns the mean and the standard deviation over the subsets.
    /// </summary>
    public static (double Mean, double StdDev) KernelInceptionDistance(double[] a, int n, double[] b, int m, int d, int subsets = 50, int subsetSize = 1000, int seed = 0)
    {
        if (a.Length != (long)n * d || b.Length != (long)m * d) throw new ArgumentException($"KID: expected {n}x{d} and {m}x{d} features");
        int s = Math.Min(subsetSize, Math.Min(n, m));
        if (s < 2) throw new ArgumentException($"KID needs at least 2 feature vectors in each set, got {n} and {m}");
        if (subsets < 1) throw new ArgumentException($"KID needs at least one subset, got {subsets}");
        var rng = new Random(seed);
        var picks = new (int[] X, int[] Y)[subsets];
        for (int k = 0; k < subsets; k++) picks[k] = (Choose(rng, n, s), Choose(rng, m, s));
        var values = new double[subsets];
        Parallel.For(0, subsets, k => values[k] = UnbiasedMmd2(a, picks[k].X, b, picks[k].Y, d));
        double mean = values.Average();
        double variance = subsets > 1 ? values.Sum(v => (v - mean) * (v - mean)) / (subsets - 1) : 0;
        return (mean, Math.Sqrt(variance));
    }

    private static double UnbiasedMmd2(double[] a, int[] x, double[] b, int[] y, int d)
    {
        int s = x.Length;
        double kxx = 0, kyy = 0, kxy = 0;
        for (int i = 0; i < s; i++)
        {
            for (int j = i + 1; j < s; j++)
            {
                kxx += Cubic(a, x[i], a, x[j], d);
                kyy += Cubic(b, y[i], b, y[j], d);
            }
            for (int j = 0; j < s; j++) kxy += Cubic(a, x[i], b, y[j], d);
        }
        return 2 * (kxx + kyy) / ((double)s * (s - 1)) - 2 * kxy / ((double)s * s);
    }

    // k(u, v) = (uᵀv / d + 1)³
    private static double Cubic(double[] p, int i, double[] q, int j, int d)
    {
        double dot = 0;
        int pi = i * d, qj = j * d;
        for (int t = 0; t < d; t++) dot += p[pi + t] * q[qj + t];
        double v = dot / d + 1;
        return v * v * v;
    }

    // s distinct indices of 0..n−1: a partial Fisher–Yates shuffle.
    private static int[] Choose(Random rng, int n, int s)
    {
        var all = Enumerable.Range(0, n).ToArray();
        for (int i = 0; i < s; i++)
        {
            int j = i + rng.Next(n - i);
            (all[i], all[j]) = (all[j], all[i]);
        }
        return all[..s];
    }

    /// <summary>The symmetric positive semi-definite square root V diag(√max(λ, 0)) Vᵀ of a symmetric matrix.</summary>
    public static double[,] SymmetricSqrt(double[,] matrix)
    {
        int d = matrix.GetLength(0);
        var (values, vectors) = SymmetricEigen(matrix);
        var root = new double[d, d];
        for (int k = 0; k < d; k++)
        {
            double r = Math.Sqrt(Math.Max(values[k], 0));
            if (r == 0) continue;
            for (int i = 0; i < d; i++)
            {
                double vi = vectors[i, k] * r;
                for (int j = 0; j < d; j++) root[i, j] += vi * vectors[j, k];
            }
        }
        Symmetrize(root);
        return root;
    }

    /// <summary>
    /// Eigenvalues and eigenvectors (columns) of a symmetric matrix by the cyclic Jacobi method (Golub &amp; Van
    /// Loan, Matrix Computations, §8.5): rotations zero each off-diagonal element in turn until the
    /// off-diagonal mass is below 1e-32 of the total (Jacobi converges quadratically, so this costs a sweep or two). Accurate to rounding for symmetric input.
    /// </summary>
    public static (double[] Values, double[,] Vectors) SymmetricEigen(double[,] matrix)
    {
        int d = matrix.GetLength(0);
        if (matrix.GetLength(1) != d) throw new ArgumentException($"eigendecomposition needs a square matrix, got {d}x{matrix.GetLength(1)}");
        var a = (double[,])matrix.Clone();
        var v = new double[d, d];
        for (int i = 0; i < d; i++) v[i, i] = 1;
        double total = 0;
        for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) total += a[i, j] * a[i, j];
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int i = 0; i < d; i++) for (int j = i + 1; j < d; j++) off += a[i, j] * a[i, j];
            if (off <= 1e-32 * total || off == 0) break;
            for (int p = 0; p < d; p++)
                for (int q = p + 1; q < d; q++)
                {
                    double apq = a[p, q];
                    if (apq == 0) continue;
                    // Rotation angle that zeroes a[p,q]: θ = (a_qq − a_pp) / (2 a_pq), t = sgn θ / (|θ| + √(θ² + 1)).
                    double theta = (a[q, q] - a[p, p]) / (2 * apq);
                    double t = Math.Sign(theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    if (theta == 0) t = 1;
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < d; k++)
                    {
                        double akp = a[k, p], akq = a[k, q];
                        a[k, p] = c * akp - s * akq;
                        a[k, q] = s * akp + c * akq;
                    }
                    for (int k = 0; k < d; k++)
                    {
                        double apk = a[p, k], aqk = a[q, k];
                        a[p, k] = c * apk - s * aqk;
                        a[q, k] = s * apk + c * aqk;
                    }
                    for (int k = 0; k < d; k++)
                    {
                        double vkp = v[k, p], vkq = v[k, q];
                        v[k, p] = c * vkp - s * vkq;
                        v[k, q] = s * vkp + c * vkq;
                    }
                }
        }
        var values = new double[d];
        for (int i = 0; i < d; i++) values[i] = a[i, i];
        return (values, v);
    }

    private static double[,] Multiply(double[,] x, double[,] y)
    {
        int n = x.GetLength(0), k = x.GetLength(1), m = y.GetLength(1);
        var r = new double[n, m];
        for (int i = 0; i < n; i++)
            for (int t = 0; t < k; t++)
            {
                double xit = x[i, t];
                if (xit == 0) continue;
                for (int j = 0; j < m; j++) r[i, j] += xit * y[t, j];
            }
        return r;
    }

    private static void Symmetrize(double[,] m)
    {
        int d = m.GetLength(0);
        for (int i = 0; i < d; i++)
            for (int j = i + 1; j < d; j++)
                m[i, j] = m[j, i] = 0.5 * (m[i, j] + m[j, i]);
    }
}
