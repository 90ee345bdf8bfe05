using NUnit.Framework;

namespace IlgpuDdpm.Tests;

/// <summary>Comparisons against double-precision references, with messages that say where and by how much.</summary>
public static class Check
{
    /// <summary>
    /// Asserts |actual − expected| ≤ atol + rtol·|expected| everywhere; on failure names the first bad
    /// index, both values and the largest error.
    /// </summary>
    public static void Close(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double rtol, double atol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        int firstBad = -1;
        double worst = 0;
        int worstAt = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(actual[i])) err = double.PositiveInfinity;
            if (err > worst) { worst = err; worstAt = i; }
            if (firstBad < 0 && err > atol + rtol * Math.Abs(expected[i])) firstBad = i;
        }
        if (firstBad >= 0)
            Assert.Fail($"{what}: element {firstBad} is {actual[firstBad]}, expected {expected[firstBad]} " +
                        $"(largest error {worst:G4} at {worstAt}; rtol {rtol}, atol {atol})");
    }

    /// <summary>Same as <see cref="Close(ReadOnlySpan{float}, ReadOnlySpan{double}, double, double, string)"/> for float expectations.</summary>
    public static void Close(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double rtol, double atol, string what)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        Close(actual, e, rtol, atol, what);
    }

    /// <summary>Bit-for-bit equality of two float arrays.</summary>
    public static void BitIdentical(float[] a, float[] b, string what)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length), $"{what}: length");
        for (int i = 0; i < a.Length; i++)
            if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i]))
                Assert.Fail($"{what}: element {i} differs: {a[i]:R} vs {b[i]:R}");
    }
}

/// <summary>Deterministic host data for tests.</summary>
public static class TestData
{
    /// <summary><paramref name="n"/> values uniform in [−scale, scale) from a seeded System.Random.</summary>
    public static float[] Uniform(int n, int seed, float scale = 1f)
    {
        var rng = new System.Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    /// <summary>Widens to double for a reference computation.</summary>
    public static double[] ToDouble(float[] a) => Array.ConvertAll(a, v => (double)v);
}

/// <summary>Central finite differences of a double-precision reference function.</summary>
public static class FiniteDifference
{
    /// <summary>
    /// d f / d x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h for every i (or only the listed indices, others 0).
    /// </summary>
    public static double[] Gradient(Func<double[], double> f, double[] x, double h = 1e-4, IEnumerable<int>? indices = null)
    {
        var grad = new double[x.Length];
        var probe = (double[])x.Clone();
        foreach (int i in indices ?? Enumerable.Range(0, x.Length))
        {
            double keep = probe[i];
            probe[i] = keep + h; double plus = f(probe);
            probe[i] = keep - h; double minus = f(probe);
            probe[i] = keep;
            grad[i] = (plus - minus) / (2 * h);
        }
        return grad;
    }

    /// <summary>Σ_i upstream_i · y_i: turns a tensor-valued reference into the scalar whose gradient is the vector–Jacobian product.</summary>
    public static double Dot(double[] upstream, double[] y)
    {
        double s = 0;
        for (int i = 0; i < y.Length; i++) s += upstream[i] * y[i];
        return s;
    }
}
