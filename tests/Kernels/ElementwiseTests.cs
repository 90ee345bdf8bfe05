using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Random;
using NUnit.Framework;
using R = IlgpuDdpm.Tests.Kernels.ElementwiseReference;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// ElementwiseKernels against <see cref="ElementwiseReference"/>; every backward against central finite
/// differences of the reference (vector–Jacobian products with a random upstream gradient, added onto a
/// random prior gradient to prove the kernels ADD); dropout's mask, statistics and determinism; the
/// timestep sinusoid against its formula; the ops on a tape. Each kernel runs with the CPU accelerator's
/// own launch shape, the GPU's (4 units per thread) and an odd capped one, so the grid-stride loops and
/// their tails are exercised.
/// </summary>
[TestFixture]
public sealed class ElementwiseTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    /// <summary>
    /// Launch shapes: 0 = the device's own family (what ops use); 1 = the GPU's (4 units per thread, no cap);
    /// 2 = 3 units per thread capped at 5 threads (an odd stride, many trips round the grid-stride loop).
    /// </summary>
    public static readonly int[] Variants = [0, 1, 2];

    private static readonly GridStride[] LaunchShapes = [default, new(GridStride.GpuItemsPerThread, int.MaxValue), new(3, 5)];

    private static readonly Dictionary<int, ElementwiseKernels> Families = new();

    private static ElementwiseKernels Family(int variant)
    {
        if (variant == 0) return Device.Kernels<ElementwiseKernels>();
        lock (Families)
        {
            if (!Families.TryGetValue(variant, out var k))
                Families[variant] = k = ElementwiseKernels.CreateWith(Device, LaunchShapes[variant]);
            return k;
        }
    }

    // Lengths: 1, odd, below and above every items-per-thread setting, not a multiple of 4 or 256.
    public static readonly int[] Lengths = [1, 7, 257, 1001];

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    private static IEnumerable<int>? Probe(int n) => n <= 64 ? null : Enumerable.Range(0, n).Where(i => i % (n / 48) == 0 || i == n - 1);

    /// <summary>
    /// Asserts <paramref name="actual"/> = prior + ∂(Σ dy·f(x))/∂x, by central differences of the double
    /// reference, on every index (small inputs) or ~50 probed ones.
    /// </summary>
    private static void CheckVjp(Func<double[], double[]> f, float[] x, float[] dy, float[] prior, float[] actual, string what,
                                 double h = 1e-3, double rtol = 1e-4, double atol = 2e-5)
    {
        var upstream = TestData.ToDouble(dy);
        var indices = Probe(x.Length);
        var grad = FiniteDifference.Gradient(z => FiniteDifference.Dot(upstream, f(z)), TestData.ToDouble(x), h, indices);
        var probed = (indices ?? Enumerable.Range(0, x.Length)).ToArray();
        var got = probed.Select(i => actual[i]).ToArray();
        var expected = probed.Select(i => prior[i] + grad[i]).ToArray();
        Check.Close(got, expected, rtol, atol, what);
    }

    // ------------------------------------------------------------------ SiLU

    [Test]
    public void SiluMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var x = TestData.Uniform(n, 1, 6f);
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(n);
        Family(variant).Silu(xb.View, yb.View);
        Check.Close(yb.ToArray(), R.Silu(TestData.ToDouble(x)), 1e-5, 1e-6, $"silu n={n}");
    }

    [Test]
    public void SiluBackwardAddsTheVectorJacobianProduct([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var x = TestData.Uniform(n, 2, 6f);
        var dy = TestData.Uniform(n, 3);
        var prior = TestData.Uniform(n, 4);
        using var xb = Upload(x);
        using var dyb = Upload(dy);
        using var dxb = Upload(prior);
        Family(variant).SiluBackward(xb.View, dyb.View, dxb.View);
        CheckVjp(R.Silu, x, dy, prior, dxb.ToArray(), $"silu backward n={n}", h: 1e-4);
    }

    // ------------------------------------------------------------------ GELU (the generic unary kernel with GeluOp)

    [Test]
    public void GeluMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var x = TestData.Uniform(n, 11, 6f);
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(n);
        Family(variant).Unary(new GeluOp(), xb.View, yb.View);
        Check.Close(yb.ToArray(), R.Gelu(TestData.ToDouble(x)), 1e-5, 1e-6, $"gelu n={n}");
    }

    [Test]
    public void GeluBackwardAddsTheVectorJacobianProduct([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var x = TestData.Uniform(n, 12, 6f);
        var dy = TestData.Uniform(n, 13);
        var prior = TestData.Uniform(n, 14);
        using var xb = Upload(x);
        using var dyb = Upload(dy);
        using var dxb = Upload(prior);
        Family(variant).UnaryBackward(new GeluOp(), xb.View, dyb.View, dxb.View);
        CheckVjp(R.Gelu, x, dy, prior, dxb.ToArray(), $"gelu backward n={n}", h: 1e-4);
    }

    [Test]
    public void GeluIsFiniteForLargeInputs()
    {
        float[] x = [-200f, -90f, -30f, 0f, 30f, 90f, 200f];
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(x.Length);
        using var dyb = Upload(Enumerable.Repeat(1f, x.Length).ToArray());
        using var dxb = Device.Pool.RentZeroed<float>(x.Length);
        var k = Family(0);
        k.Unary(new GeluOp(), xb.View, yb.View);
        k.UnaryBackward(new GeluOp(), xb.View, dyb.View, dxb.View);
        Check.Close(yb.ToArray(), R.Gelu(TestData.ToDouble(x)), 1e-6, 1e-6, "gelu at large |x|");
        Check.Close(dxb.ToArray(), [0, 0, 0, 0.5, 1, 1, 1], 1e-6, 1e-6, "gelu' at large |x|");
    }

    [Test]
    public void SiluIsFiniteForLargeInputs()
    {
        float[] x = [-200f, -90f, -30f, 0f, 30f, 90f, 200f];
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(x.Length);
        using var dyb = Upload(Enumerable.Repeat(1f, x.Length).ToArray());
        using var dxb = Device.Pool.RentZeroed<float>(x.Length);
        var k = Family(0);
        k.Silu(xb.View, yb.View);
        k.SiluBackward(xb.View, dyb.View, dxb.View);
        Check.Close(yb.ToArray(), R.Silu(TestData.ToDouble(x)), 1e-6, 1e-6, "silu at large |x|");
        Check.Close(dxb.ToArray(), [0, 0, 0, 0.5, 1, 1, 1], 1e-6, 1e-6, "silu' at large |x|");
    }

    // ------------------------------------------------------------------ Add, AddInto, Scale, Copy, Fill

    [Test]
    public void AddMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var a = TestData.Uniform(n, 5);
        var b = TestData.Uniform(n, 6);
        using var ab = Upload(a);
        using var bb = Upload(b);
        using var yb = Device.Pool.Rent<float>(n);
        Family(variant).Add(ab.View, bb.View, yb.View);
        Check.Close(yb.ToArray(), R.Add(TestData.ToDouble(a), TestData.ToDouble(b)), 1e-6, 1e-7, $"add n={n}");
    }

    [Test]
    public void AddBackwardAddsIntoBothGradients([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var a = TestData.Uniform(n, 7);
        var b = TestData.Uniform(n, 8);
        var dy = TestData.Uniform(n, 9);
        var priorA = TestData.Uniform(n, 10);
        var priorB = TestData.Uniform(n, 11);
        using var dyb = Upload(dy);
        using var da = Upload(priorA);
        using var db = Upload(priorB);
        var k = Family(variant);
        k.AddInto(da.View, dyb.View);
        k.AddInto(db.View, dyb.View);
        var bd = TestData.ToDouble(b);
        var ad = TestData.ToDouble(a);
        CheckVjp(z => R.Add(z, bd), a, dy, priorA, da.ToArray(), $"add backward da n={n}");
        CheckVjp(z => R.Add(ad, z), b, dy, priorB, db.ToArray(), $"add backward db n={n}");
    }

    [Test]
    public void ScaleAndItsBackward([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        const float s = -1.75f;
        var x = TestData.Uniform(n, 12);
        var dy = TestData.Uniform(n, 13);
        var prior = TestData.Uniform(n, 14);
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(n);
        using var dyb = Upload(dy);
        using var dxb = Upload(prior);
        var k = Family(variant);
        k.Scale(xb.View, yb.View, s);
        k.ScaleBackward(dyb.View, dxb.View, s);
        Check.Close(yb.ToArray(), R.Scale(TestData.ToDouble(x), s), 1e-6, 1e-7, $"scale n={n}");
        CheckVjp(z => R.Scale(z, s), x, dy, prior, dxb.ToArray(), $"scale backward n={n}");
    }

    [Test]
    public void CopyAndFill([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Lengths))] int n)
    {
        var x = TestData.Uniform(n, 15);
        using var src = Upload(x);
        using var dst = Device.Pool.RentZeroed<float>(n);
        var k = Family(variant);
        k.Copy(src.View, dst.View);
        Check.BitIdentical(dst.ToArray(), x, $"copy n={n}");
        k.Fill(dst.View, 2.5f);
        Assert.That(dst.ToArray(), Has.All.EqualTo(2.5f), $"fill n={n}");
    }

    [Test]
    public void InPlaceUseIsAllowed()
    {
        var x = TestData.Uniform(300, 16, 3f);
        using var xb = Upload(x);
        var k = Family(0);
        k.Silu(xb.View, xb.View);
        k.Scale(xb.View, xb.View, 2f);
        k.Add(xb.View, xb.View, xb.View);
        var expected = R.Silu(TestData.ToDouble(x)).Select(v => 4 * v).ToArray();
        Check.Close(xb.ToArray(), expected, 1e-5, 1e-6, "silu, scale, add in place");
    }

    // ------------------------------------------------------------------ AddChannelVector

    public static readonly int[][] ChannelShapes = [[1, 1, 1], [2, 3, 35], [3, 5, 17], [2, 4, 64], [2, 130, 3]];

    [Test]
    public void AddChannelVectorMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(ChannelShapes))] int[] shape)
    {
        int n = shape[0], c = shape[1], s = shape[2];
        var x = TestData.Uniform(n * c * s, 17);
        var v = TestData.Uniform(n * c, 18);
        using var xb = Upload(x);
        using var vb = Upload(v);
        using var yb = Device.Pool.Rent<float>(x.Length);
        Family(variant).AddChannelVector(xb.View, vb.View, yb.View, n, c, s);
        Check.Close(yb.ToArray(), R.AddChannelVector(TestData.ToDouble(x), TestData.ToDouble(v), n, c, s), 1e-6, 1e-7, $"add-channel-vector {n}x{c}x{s}");
    }

    [Test]
    public void AddChannelVectorBackwardAddsIntoDxAndDv([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(ChannelShapes))] int[] shape)
    {
        int n = shape[0], c = shape[1], s = shape[2];
        var x = TestData.Uniform(n * c * s, 19);
        var v = TestData.Uniform(n * c, 20);
        var dy = TestData.Uniform(n * c * s, 21);
        var priorX = TestData.Uniform(x.Length, 22);
        var priorV = TestData.Uniform(v.Length, 23);
        using var dyb = Upload(dy);
        using var dx = Upload(priorX);
        using var dv = Upload(priorV);
        Family(variant).AddChannelVectorBackward(dyb.View, dx.View, dv.View, n, c, s);
        var xd = TestData.ToDouble(x);
        var vd = TestData.ToDouble(v);
        CheckVjp(z => R.AddChannelVector(z, vd, n, c, s), x, dy, priorX, dx.ToArray(), $"add-channel-vector dx {n}x{c}x{s}");
        CheckVjp(z => R.AddChannelVector(xd, z, n, c, s), v, dy, priorV, dv.ToArray(), $"add-channel-vector dv {n}x{c}x{s}");
    }

    [Test]
    public void AddChannelVectorBackwardSkipsAGradientPassedAsDefaultAndIsRepeatable()
    {
        int n = 2, c = 3, s = 333;
        var dy = TestData.Uniform(n * c * s, 24, 100f);
        using var dyb = Upload(dy);
        using var dv1 = Device.Pool.RentZeroed<float>(n * c);
        using var dv2 = Device.Pool.RentZeroed<float>(n * c);
        var k = Family(0);
        k.AddChannelVectorBackward(dyb.View, default, dv1.View, n, c, s);
        Family(2).AddChannelVectorBackward(dyb.View, default, dv2.View, n, c, s);
        Check.BitIdentical(dv1.ToArray(), dv2.ToArray(), "dv with two launch shapes: same bits");
        using var dx = Device.Pool.RentZeroed<float>(n * c * s);
        k.AddChannelVectorBackward(dyb.View, dx.View, default, n, c, s);
        Check.BitIdentical(dx.ToArray(), dy, "dx alone");
    }

    // ------------------------------------------------------------------ Concat

    // [N, Ca, Cb, S]
    public static readonly int[][] ConcatShapes = [[1, 1, 1, 1], [1, 1, 4, 1], [2, 3, 2, 35], [3, 5, 1, 6], [2, 7, 9, 17]];

    [Test]
    public void ConcatMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(ConcatShapes))] int[] shape)
    {
        int n = shape[0], ca = shape[1], cb = shape[2], s = shape[3];
        var a = TestData.Uniform(n * ca * s, 25);
        var b = TestData.Uniform(n * cb * s, 26);
        using var ab = Upload(a);
        using var bb = Upload(b);
        using var yb = Device.Pool.Rent<float>(n * (ca + cb) * s);
        Family(variant).Concat(ab.View, bb.View, yb.View, n, ca, cb, s);
        var expected = R.Concat(TestData.ToDouble(a), TestData.ToDouble(b), n, ca, cb, s);
        Check.BitIdentical(yb.ToArray(), expected.Select(v => (float)v).ToArray(), $"concat {string.Join("x", shape)}");
    }

    [Test]
    public void ConcatBackwardSplitsAndAdds([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(ConcatShapes))] int[] shape)
    {
        int n = shape[0], ca = shape[1], cb = shape[2], s = shape[3];
        var a = TestData.Uniform(n * ca * s, 27);
        var b = TestData.Uniform(n * cb * s, 28);
        var dy = TestData.Uniform(n * (ca + cb) * s, 29);
        var priorA = TestData.Uniform(a.Length, 30);
        var priorB = TestData.Uniform(b.Length, 31);
        using var dyb = Upload(dy);
        using var da = Upload(priorA);
        using var db = Upload(priorB);
        Family(variant).ConcatBackward(dyb.View, da.View, db.View, n, ca, cb, s);
        var ad = TestData.ToDouble(a);
        var bd = TestData.ToDouble(b);
        CheckVjp(z => R.Concat(z, bd, n, ca, cb, s), a, dy, priorA, da.ToArray(), $"concat da {string.Join("x", shape)}");
        CheckVjp(z => R.Concat(ad, z, n, ca, cb, s), b, dy, priorB, db.ToArray(), $"concat db {string.Join("x", shape)}");
    }

    [Test]
    public void ConcatBackwardSkipsAGradientPassedAsDefault()
    {
        int n = 2, ca = 3, cb = 2, s = 5;
        var dy = TestData.Uniform(n * (ca + cb) * s, 32);
        using var dyb = Upload(dy);
        using var db = Device.Pool.RentZeroed<float>(n * cb * s);
        Family(0).ConcatBackward(dyb.View, default, db.View, n, ca, cb, s);
        var expected = new float[db.Length];
        for (int b = 0; b < n; b++)
            for (int i = 0; i < cb * s; i++) expected[b * cb * s + i] = dy[b * (ca + cb) * s + ca * s + i];
        Check.BitIdentical(db.ToArray(), expected, "db alone");
    }

    // ------------------------------------------------------------------ Dropout

    // Offsets not multiples of 4 start mid Philox block; lengths end mid block.
    public static readonly object[] DropoutCases =
    [
        new object[] { 1, 0UL }, new object[] { 7, 3UL }, new object[] { 257, 6UL }, new object[] { 1001, 1_000_000_001UL },
    ];

    [Test, TestCaseSource(nameof(DropoutCases))]
    public void DropoutMatchesTheHostMaskAndBackwardUsesTheSameMask(int n, ulong offset)
    {
        const float p = 0.3f;
        var key = new PhiloxKey(77, 5, offset);
        var x = TestData.Uniform(n, 33);
        var dy = TestData.Uniform(n, 34);
        var prior = TestData.Uniform(n, 35);
        foreach (int variant in Variants)
        {
            var k = Family(variant);
            using var xb = Upload(x);
            using var yb = Device.Pool.Rent<float>(n);
            using var dyb = Upload(dy);
            using var dxb = Upload(prior);
            k.Dropout(xb.View, yb.View, p, key);
            k.DropoutBackward(dyb.View, dxb.View, p, key);
            Check.Close(yb.ToArray(), R.Dropout(TestData.ToDouble(x), p, key), 1e-6, 1e-7, $"dropout n={n} offset={offset} variant {variant}");
            CheckVjp(z => R.Dropout(z, p, key), x, dy, prior, dxb.ToArray(), $"dropout backward n={n} offset={offset} variant {variant}");
        }
    }

    [Test]
    public void DropoutWithOneKeyGivesOneMaskAndAnotherKeyAnother()
    {
        const int n = 4099;
        var key = new PhiloxKey(2024, 9, 17);
        var x = TestData.Uniform(n, 36);
        using var xb = Upload(x);
        using var y1 = Device.Pool.Rent<float>(n);
        using var y2 = Device.Pool.Rent<float>(n);
        var k = Family(0);
        k.Dropout(xb.View, y1.View, 0.5f, key);
        k.Dropout(xb.View, y2.View, 0.5f, key);
        var first = y1.ToArray();
        Check.BitIdentical(first, y2.ToArray(), "same key twice");
        foreach (int variant in new[] { 1, 2 })
        {
            Family(variant).Dropout(xb.View, y2.View, 0.5f, key);
            Check.BitIdentical(first, y2.ToArray(), $"same key, launch shape {variant}");
        }
        k.Dropout(xb.View, y2.View, 0.5f, key.Advance(n));
        var advanced = y2.ToArray();
        int differ = Enumerable.Range(0, n).Count(i => (first[i] == 0) != (advanced[i] == 0));
        Assert.That(differ, Is.GreaterThan(n / 4), "an advanced key must give a different mask (about half the elements differ)");
    }

    [TestCase(0.1f)]
    [TestCase(0.5f)]
    [TestCase(0.9f)]
    public void DropoutKeepsAboutOneMinusPAndScalesTheKept(float p)
    {
        const int n = 1 << 16;
        using var xb = Device.Pool.Rent<float>(n);
        using var yb = Device.Pool.Rent<float>(n);
        var k = Family(0);
        k.Fill(xb.View, 1f);
        k.Dropout(xb.View, yb.View, p, new PhiloxKey(11, 1, 5));
        var y = yb.ToArray();
        float scale = 1f / (1f - p);
        Assert.That(y, Has.All.Matches<float>(v => v == 0f || v == scale), "every element is 0 or 1/(1 − p)");
        double kept = y.Count(v => v != 0f) / (double)n;
        double se = Math.Sqrt(p * (1 - p) / n);
        Assert.That(Math.Abs(kept - (1 - p)), Is.LessThan(4 * se), $"kept fraction {kept} vs {1 - p}");
    }

    [Test]
    public void DropoutWithPZeroIsTheIdentityAndBadPIsRejected()
    {
        var x = TestData.Uniform(100, 37);
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(100);
        var k = Family(0);
        k.Dropout(xb.View, yb.View, 0f, new PhiloxKey(1, 2, 3));
        Check.BitIdentical(yb.ToArray(), x, "p = 0");
        Assert.Throws<ArgumentOutOfRangeException>(() => k.Dropout(xb.View, yb.View, 1f, new PhiloxKey(1, 2, 3)));
        Assert.Throws<ArgumentOutOfRangeException>(() => k.Dropout(xb.View, yb.View, -0.1f, new PhiloxKey(1, 2, 3)));
        Assert.Throws<ArgumentOutOfRangeException>(() => k.DropoutBackward(xb.View, yb.View, float.NaN, new PhiloxKey(1, 2, 3)));
    }

    // ------------------------------------------------------------------ TimestepSinusoid

    [TestCase(4)]
    [TestCase(16)]
    [TestCase(64)]
    public void TimestepSinusoidMatchesTheFormula(int dim)
    {
        int[] t = [0, 1, 999, 500, 37];
        using var tb = Device.Pool.Rent<int>(t.Length);
        tb.CopyFrom(t);
        foreach (int variant in Variants)
        {
            using var yb = Device.Pool.Rent<float>(t.Length * dim);
            Family(variant).TimestepSinusoid(tb.View, yb.View, t.Length, dim);
            var y = yb.ToArray();
            var expected = R.TimestepSinusoid(t, dim);
            int half = dim / 2;
            for (int r = 0; r < t.Length; r++)
                for (int j = 0; j < dim; j++)
                {
                    // float32 phase t·f_j carries ~1e-7 relative error (f from a float exp, one product):
                    // allow a few ulp of the phase, absolute.
                    double phase = t[r] * R.Frequency(j % half, half);
                    double tol = 2e-6 + 1e-6 * phase;
                    int i = r * dim + j;
                    Assert.That(y[i], Is.EqualTo(expected[i]).Within(tol), $"dim {dim}, t = {t[r]}, entry {j} (variant {variant})");
                }
            // t = 0: exactly sin 0 = 0 and cos 0 = 1.
            Assert.That(y.Take(half), Has.All.EqualTo(0f), "sin(0)");
            Assert.That(y.Skip(half).Take(half), Has.All.EqualTo(1f), "cos(0)");
        }
    }

    [Test]
    public void TimestepSinusoidRejectsBadArguments()
    {
        using var tb = Device.Pool.Rent<int>(2);
        using var yb = Device.Pool.Rent<float>(2 * 6);
        var k = Family(0);
        Assert.Throws<ArgumentException>(() => k.TimestepSinusoid(tb.View, yb.View, 2, 5), "odd dim");
        Assert.Throws<ArgumentException>(() => k.TimestepSinusoid(tb.View, yb.View, 2, 2), "dim 2: half − 1 = 0");
        Assert.Throws<ArgumentException>(() => k.TimestepSinusoid(tb.View, yb.View, 3, 4), "more rows than timesteps");
        Assert.Throws<ArgumentException>(() => k.TimestepSinusoid(tb.View, yb.View, 2, 4), "output of the wrong length");
    }

    // ------------------------------------------------------------------ validation

    [Test]
    public void LengthMismatchesThrowOneLineArgumentExceptions()
    {
        using var a = Device.Pool.Rent<float>(10);
        using var b = Device.Pool.Rent<float>(11);
        var k = Family(0);
        var e = Assert.Throws<ArgumentException>(() => k.Add(a.View, b.View, a.View))!;
        Assert.That(e.Message, Does.Contain("expected 10 elements, got 11").And.Not.Contain("\n"));
        Assert.Throws<ArgumentException>(() => k.Silu(a.View, b.View));
        Assert.Throws<ArgumentException>(() => k.Copy(a.View, b.View));
        Assert.Throws<ArgumentException>(() => k.AddChannelVector(a.View, a.View, a.View, 2, 1, 5));
        Assert.Throws<ArgumentException>(() => k.Concat(a.View, a.View, b.View, 1, 2, 2, 5));
        Assert.Throws<ArgumentException>(() => k.ConcatBackward(a.View, b.View, default, 1, 1, 1, 5));
    }

    // ------------------------------------------------------------------ ops on a tape

    private static Tensor Leaf(float[] data, bool grad, params int[] shape)
    {
        var t = Tensor.FromArray(Device, data, shape);
        if (grad) t.RequireGrad();
        return t;
    }

    [Test]
    public void OpsComputeTheirForwardAndRecordOnlyWhenNeeded()
    {
        var tape = new Tape(Device);
        try
        {
            var xd = TestData.Uniform(2 * 3 * 4 * 5, 40, 3f);
            var vd = TestData.Uniform(2 * 3, 41);
            var bd = TestData.Uniform(2 * 2 * 4 * 5, 42);
            using var x = Leaf(xd, true, 2, 3, 4, 5);
            using var x2 = Leaf(xd, false, 2, 3, 4, 5);
            using var v = Leaf(vd, false, 2, 3);
            using var b = Leaf(bd, false, 2, 2, 4, 5);
            var X = TestData.ToDouble(xd);

            var silu = tape.Silu(x);
            Assert.That(silu.Shape, Is.EqualTo(new[] { 2, 3, 4, 5 }));
            Check.Close(silu.ToArray(), R.Silu(X), 1e-5, 1e-6, "op silu");
            Assert.That(tape.RecordedSteps, Is.EqualTo(1), "silu of a grad input records");

            var sum = tape.Add(x2, x2);
            Check.Close(sum.ToArray(), R.Add(X, X), 1e-6, 1e-7, "op add");
            Assert.That(tape.RecordedSteps, Is.EqualTo(1), "add of inputs without grad records nothing");

            var scaled = tape.Scale(silu, 0.5f);
            Check.Close(scaled.ToArray(), R.Scale(R.Silu(X), 0.5), 1e-5, 1e-6, "op scale");
            Assert.That(tape.RecordedSteps, Is.EqualTo(2), "scale of a recorded output records");

            var biased = tape.AddChannelVector(x, v);
            Check.Close(biased.ToArray(), R.AddChannelVector(X, TestData.ToDouble(vd), 2, 3, 20), 1e-6, 1e-7, "op add-channel-vector");

            var cat = tape.Concat(x, b);
            Assert.That(cat.Shape, Is.EqualTo(new[] { 2, 5, 4, 5 }));
            Check.Close(cat.ToArray(), R.Concat(X, TestData.ToDouble(bd), 2, 3, 2, 20), 0, 0, "op concat");

            var up = tape.Upsample2x(x);
            Assert.That(up.Shape, Is.EqualTo(new[] { 2, 3, 8, 10 }));
            Check.Close(up.ToArray(), R.Upsample2x(X, 2, 3, 4, 5), 0, 0, "op upsample");
            Assert.That(tape.RecordedSteps, Is.EqualTo(5));

            using (tape.NoGrad())
            {
                tape.Silu(x);
                tape.Add(x, x);
                Assert.That(tape.RecordedSteps, Is.EqualTo(5), "nothing is recorded under NoGrad");
            }

            using var tb = Device.Pool.Rent<int>(3);
            tb.CopyFrom([0, 1, 999]);
            var emb = tape.TimestepSinusoid(tb.View, 3, 8);
            Assert.That(emb.Shape, Is.EqualTo(new[] { 3, 8 }));
            Assert.That(emb.ToArray()[4], Is.EqualTo(1f), "cos(0·f_0)");
            Assert.That(tape.RecordedSteps, Is.EqualTo(5), "the embedding has no gradient");
        }
        finally
        {
            tape.Clear();
        }
    }

    [Test]
    public void DropoutOpIsTheIdentityUnlessTrainingAndMatchesTheKernelWhenTraining()
    {
        var tape = new Tape(Device);
        try
        {
            var xd = TestData.Uniform(3 * 4 * 5, 43);
            using var x = Leaf(xd, true, 3, 4, 5);
            var key = new PhiloxKey(8, 3, 2);
            tape.Training = false;
            Assert.That(tape.Dropout(x, 0.5f, key), Is.SameAs(x), "not training: x itself");
            tape.Training = true;
            Assert.That(tape.Dropout(x, 0f, key), Is.SameAs(x), "p = 0: x itself");
            Assert.That(tape.RecordedSteps, Is.EqualTo(0));
            var y = tape.Dropout(x, 0.5f, key);
            Assert.That(y, Is.Not.SameAs(x));
            Check.Close(y.ToArray(), R.Dropout(TestData.ToDouble(xd), 0.5f, key), 1e-6, 1e-7, "op dropout");
            Assert.That(tape.RecordedSteps, Is.EqualTo(1));
            Assert.Throws<ArgumentOutOfRangeException>(() => tape.Dropout(x, 1f, key));
        }
        finally
        {
            tape.Clear();
        }
    }

    [Test]
    public void OpsRejectBadShapesInOneLine()
    {
        var tape = new Tape(Device);
        try
        {
            using var a = Tensor.Zeros(Device, 2, 3, 4, 4);
            using var b = Tensor.Zeros(Device, 2, 3, 4, 5);
            using var v = Tensor.Zeros(Device, 3, 2);
            using var flat = Tensor.Zeros(Device, 96);
            Assert.That(Assert.Throws<ArgumentException>(() => tape.Add(a, b))!.Message, Does.Contain("[2, 3, 4, 4]").And.Contain("[2, 3, 4, 5]"));
            Assert.Throws<ArgumentException>(() => tape.Concat(a, b));
            Assert.Throws<ArgumentException>(() => tape.AddChannelVector(a, v));
            Assert.Throws<ArgumentException>(() => tape.Upsample2x(flat));
            Assert.That(tape.OwnedTensors, Is.EqualTo(0), "a rejected op allocates nothing");
        }
        finally
        {
            tape.Clear();
        }
    }

    /// <summary>
    /// The ops' recorded backward steps, end to end through <see cref="Tape.Backward"/>, on one-element
    /// tensors (the only scalar losses available without a reduction op): x feeds two paths, so its
    /// gradient is the sum of both.
    /// </summary>
    [Test]
    public void ScalarChainsBackpropagateThroughTheTape()
    {
        const float x0 = 0.7f, v0 = -0.4f, s = 3f;
        var tape = new Tape(Device) { Training = true };
        using var x = Leaf([x0], true, 1, 1, 1, 1);
        using var v = Leaf([v0], true, 1, 1);
        // loss = AddChannelVector(Silu(x) + s·x, v)  →  dL/dx = silu'(x) + s,  dL/dv = 1
        var loss = tape.AddChannelVector(tape.Add(tape.Silu(x), tape.Scale(x, s)), v);
        tape.Backward(loss);
        double sig = R.Sigmoid(x0);
        Assert.That(x.Grad!.ToArray()[0], Is.EqualTo(sig * (1 + x0 * (1 - sig)) + s).Within(1e-5), "dL/dx");
        Assert.That(v.Grad!.ToArray()[0], Is.EqualTo(1f).Within(1e-6), "dL/dv");

        // Dropout on one element: find keys that keep and drop element 0, check the gradient is 1/(1 − p) or 0.
        const float p = 0.5f;
        var keep = Enumerable.Range(0, 64).Select(o => new PhiloxKey(3, 4, (ulong)o)).First(k => R.Kept(k, 0, p));
        var drop = Enumerable.Range(0, 64).Select(o => new PhiloxKey(3, 4, (ulong)o)).First(k => !R.Kept(k, 0, p));
        using var z = Leaf([1.5f], true, 1);
        tape.Backward(tape.Dropout(z, p, keep));
        Assert.That(z.Grad!.ToArray()[0], Is.EqualTo(2f), "kept: gradient 1/(1 − p)");
        tape.Backward(tape.Dropout(z, p, drop));
        Assert.That(z.Grad!.ToArray()[0], Is.EqualTo(2f), "dropped: adds nothing");
    }
}
