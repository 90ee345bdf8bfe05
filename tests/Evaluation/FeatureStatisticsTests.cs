using IlgpuDdpm.Diffusion.Evaluation;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Evaluation;

/// <summary>
/// The host statistics behind <c>ddpm score</c>: the Fréchet distance against its closed forms, the matrix
/// square root against a matrix built as a square, FCD of a set with itself, and KID's behaviour on equal
/// and shifted distributions.
/// </summary>
[TestFixture]
public sealed class FeatureStatisticsTests
{
    private static double[] Gaussian(int n, int d, int seed, double shift = 0, double scale = 1)
    {
        var rng = new System.Random(seed);
        var x = new double[n * d];
        for (int i = 0; i < x.Length; i++)
        {
            // Box–Muller
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            x[i] = shift + scale * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
        return x;
    }

    [Test]
    public void FrechetDistanceOfDiagonalGaussiansMatchesTheClosedForm()
    {
        // Commuting covariances: d² = ‖μ₁ − μ₂‖² + Σ_i (√a_i − √b_i)².
        double[] m1 = [0.5, -1, 2], m2 = [1, 0, 2.5];
        double[] a = [1, 4, 0.25], b = [9, 1, 2];
        var s1 = new double[3, 3];
        var s2 = new double[3, 3];
        for (int i = 0; i < 3; i++) { s1[i, i] = a[i]; s2[i, i] = b[i]; }
        double expected = 0;
        for (int i = 0; i < 3; i++) expected += (m1[i] - m2[i]) * (m1[i] - m2[i]) + Math.Pow(Math.Sqrt(a[i]) - Math.Sqrt(b[i]), 2);
        Assert.That(FeatureStatistics.FrechetDistance(m1, s1, m2, s2), Is.EqualTo(expected).Within(1e-12));
    }

    [Test]
    public void FrechetDistanceOfNonCommutingTwoByTwoGaussiansMatchesTheClosedForm()
    {
        // For 2×2 M with positive eigenvalues, tr √M = √(tr M + 2√det M); here M = Σ₁Σ₂ (same eigenvalues as Σ₁^½Σ₂Σ₁^½).
        var s1 = new double[,] { { 2, 0.5 }, { 0.5, 1 } };
        var s2 = new double[,] { { 1, -0.3 }, { -0.3, 3 } };
        double[] m1 = [1, 2], m2 = [0, 0.5];
        double trM = s1[0, 0] * s2[0, 0] + s1[0, 1] * s2[1, 0] + s1[1, 0] * s2[0, 1] + s1[1, 1] * s2[1, 1];
        double detM = (s1[0, 0] * s1[1, 1] - s1[0, 1] * s1[1, 0]) * (s2[0, 0] * s2[1, 1] - s2[0, 1] * s2[1, 0]);
        double traceRoot = Math.Sqrt(trM + 2 * Math.Sqrt(detM));
        double expected = 1 + 2.25 + (s1[0, 0] + s1[1, 1]) + (s2[0, 0] + s2[1, 1]) - 2 * traceRoot;
        Assert.That(FeatureStatistics.FrechetDistance(m1, s1, m2, s2), Is.EqualTo(expected).Within(1e-12));
    }

    [Test]
    public void MatrixSquareRootMatchesAMatrixBuiltAsASquare()
    {
        // R = Q diag(λ) Qᵀ with Q a product of plane rotations: R is the symmetric PSD root of A = R·R.
        const int d = 6;
        var q = new double[d, d];
        for (int i = 0; i < d; i++) q[i, i] = 1;
        var rng = new System.Random(3);
        for (int r = 0; r < 10; r++)
        {
            int p = rng.Next(d), s = (p + 1 + rng.Next(d - 1)) % d;
            double angle = rng.NextDouble() * Math.PI, c = Math.Cos(angle), sn = Math.Sin(angle);
            for (int k = 0; k < d; k++)
            {
                double qp = q[k, p], qs = q[k, s];
                q[k, p] = c * qp - sn * qs;
                q[k, s] = sn * qp + c * qs;
            }
        }
        double[] lambda = [0.1, 0.5, 1, 2, 3.5, 7];
        var root = new double[d, d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                for (int k = 0; k < d; k++) root[i, j] += q[i, k] * lambda[k] * q[j, k];
        var a = new double[d, d];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                for (int k = 0; k < d; k++) a[i, j] += root[i, k] * root[k, j];
        var actual = FeatureStatistics.SymmetricSqrt(a);
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                Assert.That(actual[i, j], Is.EqualTo(root[i, j]).Within(1e-10), $"√A[{i},{j}]");
    }

    [Test]
    public void EigenvaluesOfASymmetricMatrixReconstructIt()
    {
        var x = Gaussian(40, 5, 4);
        var (_, cov) = FeatureStatistics.MeanAndCovariance(x, 40, 5);
        var (values, vectors) = FeatureStatistics.SymmetricEigen(cov);
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++)
            {
                double v = 0;
                for (int k = 0; k < 5; k++) v += vectors[i, k] * values[k] * vectors[j, k];
                Assert.That(v, Is.EqualTo(cov[i, j]).Within(1e-12), $"V Λ Vᵀ [{i},{j}]");
            }
    }

    [Test]
    public void FrechetDistanceOfASetWithItselfIsZero()
    {
        var x = Gaussian(200, 16, 5, shift: 0.3, scale: 2);
        Assert.That(FeatureStatistics.FrechetDistance(x, 200, x, 200, 16), Is.EqualTo(0).Within(1e-9));
    }

    [Test]
    public void KidOfTwoHalvesOfOneDistributionIsZeroWithinItsDeviationAndAShiftIsNot()
    {
        const int n = 400, d = 16;
        var x = Gaussian(n, d, 6);
        var a = x[..(n / 2 * d)];
        var b = x[(n / 2 * d)..];
        var (mean, sd) = FeatureStatistics.KernelInceptionDistance(a, n / 2, b, n / 2, d, subsets: 20, subsetSize: 100, seed: 1);
        Assert.That(sd, Is.GreaterThan(0));
        Assert.That(Math.Abs(mean), Is.LessThanOrEqualTo(2 * sd), $"KID {mean} ± {sd} of two halves of one sample");

        var shifted = Gaussian(n / 2, d, 7, shift: 0.5);
        var (far, farSd) = FeatureStatistics.KernelInceptionDistance(a, n / 2, shifted, n / 2, d, subsets: 20, subsetSize: 100, seed: 1);
        Assert.That(far, Is.GreaterThan(3 * farSd).And.GreaterThan(10 * Math.Abs(mean)), $"KID {far} ± {farSd} of a shifted sample");
        Assert.That(FeatureStatistics.KernelInceptionDistance(a, n / 2, shifted, n / 2, d, 20, 100, seed: 1), Is.EqualTo((far, farSd)), "same seed, same KID");
    }
}
