using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Matmul;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class MatmulTests
{
    // Barrier variants are tested here: keep them off the suite-wide device (see TestDevice.Grouped).
    private static ComputeDevice Device => TestDevice.Grouped;
    private static MatmulKernels Kernels => Device.Kernels<MatmulKernels>();

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var buffer = Device.Pool.Rent<float>(data.Length);
        buffer.CopyFrom(data);
        return buffer;
    }

    // (batch, M, N, K): odd sizes that are multiples of neither the 16×16 register block nor the 64×64 tile.
    private static readonly (int Batch, int M, int N, int K)[] CommonShapes =
    [
        (1, 5, 3, 7), (1, 17, 19, 33), (3, 6, 5, 4), (1, 1, 1, 1),
    ];

    // Larger ones: several 16×16 blocks, or several 64×64 tiles and 16-deep steps (kept few: the tiled
    // kernel runs 256 OS threads per group with barriers on the CPU accelerator).
    private static readonly (int Batch, int M, int N, int K)[] BlockedShapes = [(2, 37, 41, 29), (1, 16, 32, 16)];
    private static readonly (int Batch, int M, int N, int K)[] TiledShapes = [(1, 70, 66, 20)];

    public static IEnumerable<TestCaseData> GemmCases()
    {
        foreach (var variant in new[] { GemmVariant.RegisterBlocked, GemmVariant.Tiled })
            foreach (var s in CommonShapes.Concat(variant == GemmVariant.Tiled ? TiledShapes : BlockedShapes))
                foreach (var ta in new[] { false, true })
                    foreach (var tb in new[] { false, true })
                        yield return new TestCaseData(variant, s.Batch, s.M, s.N, s.K, ta, tb)
                            .SetArgDisplayNames(variant.ToString(), $"{s.Batch}x{s.M}x{s.N}x{s.K}", ta ? "Aᵀ" : "A", tb ? "Bᵀ" : "B");
    }

    [TestCaseSource(nameof(GemmCases))]
    public void GemmMatchesTheReference(GemmVariant variant, int batch, int m, int n, int k, bool ta, bool tb)
    {
        var a = TestData.Uniform(batch * m * k, 1);
        var b = TestData.Uniform(batch * k * n, 2);
        using var da = Upload(a);
        using var db = Upload(b);
        using var dc = Upload(TestData.Uniform(batch * m * n, 3, 100f)); // garbage: must be overwritten
        Kernels.Gemm(da.View, db.View, dc.View, new GemmDims(batch, m, n, k, ta, tb), variant: variant);
        var expected = MatmulReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), batch, m, n, k, ta, tb);
        Check.Close(dc.ToArray(), expected, 1e-5, 1e-5, $"{variant} gemm");
    }

    [TestCase(GemmVariant.RegisterBlocked, false, false)]
    [TestCase(GemmVariant.RegisterBlocked, true, true)]
    [TestCase(GemmVariant.Tiled, false, true)]
    [TestCase(GemmVariant.Tiled, true, false)]
    public void AccumulateAddsAlphaTimesTheProductToC(GemmVariant variant, bool ta, bool tb)
    {
        const int batch = 2, m = 9, n = 18, k = 17;
        var a = TestData.Uniform(batch * m * k, 4);
        var b = TestData.Uniform(batch * k * n, 5);
        var c0 = TestData.Uniform(batch * m * n, 6);
        using var da = Upload(a);
        using var db = Upload(b);
        using var dc = Upload(c0);
        Kernels.Gemm(da.View, db.View, dc.View, new GemmDims(batch, m, n, k, ta, tb), alpha: -0.75f, accumulate: true, variant: variant);
        var expected = MatmulReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), batch, m, n, k, ta, tb, -0.75, c0: TestData.ToDouble(c0));
        Check.Close(dc.ToArray(), expected, 1e-5, 1e-5, $"{variant} accumulate");
    }

    [TestCase(GemmVariant.RegisterBlocked, false)]
    [TestCase(GemmVariant.RegisterBlocked, true)]
    [TestCase(GemmVariant.Tiled, false)]
    [TestCase(GemmVariant.Tiled, true)]
    public void GemmBiasAddsTheBiasToEveryRow(GemmVariant variant, bool accumulate)
    {
        const int batch = 2, m = 7, n = 19, k = 5;
        var a = TestData.Uniform(batch * m * k, 7);
        var b = TestData.Uniform(batch * n * k, 8);
        var bias = TestData.Uniform(n, 9);
        var c0 = TestData.Uniform(batch * m * n, 10);
        using var da = Upload(a);
        using var db = Upload(b);
        using var dbias = Upload(bias);
        using var dc = Upload(c0);
        Kernels.GemmBias(da.View, db.View, dbias.View, dc.View, new GemmDims(batch, m, n, k, TransposeB: true), 2f, accumulate, variant);
        var expected = MatmulReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), batch, m, n, k, false, true, 2,
                                            TestData.ToDouble(bias), accumulate ? TestData.ToDouble(c0) : null);
        Check.Close(dc.ToArray(), expected, 1e-5, 1e-5, $"{variant} gemm + bias");
    }

    [TestCase(GemmVariant.Tiled, true)]
    [TestCase(GemmVariant.Tiled, false)]
    [TestCase(GemmVariant.RegisterBlocked, true)]
    public void LinearBackwardGivesEveryGradientAndAdds(GemmVariant variant, bool withBias)
    {
        // Tiled: dx's product and [dw | db]'s share one launch (GemmCore.RunPair).
        const int rows = 37, outF = 70, inF = 9;
        var (dy, x, w) = (TestData.Uniform(rows * outF, 51), TestData.Uniform(rows * inF, 52), TestData.Uniform(outF * inF, 53));
        var (dx0, dw0, db0) = (TestData.Uniform(rows * inF, 54), TestData.Uniform(outF * inF, 55), TestData.Uniform(outF, 56));
        using var ddy = Upload(dy);
        using var dxIn = Upload(x);
        using var dwIn = Upload(w);
        using var ddx = Upload(dx0);
        using var ddw = Upload(dw0);
        using var ddb = Upload(db0);
        Kernels.LinearBackward(ddy.View, dxIn.View, dwIn.View, ddx.View, ddw.View, withBias ? ddb.View : default, rows, outF, inF, variant);
        var dxExpected = MatmulReference.Gemm(TestData.ToDouble(dy), TestData.ToDouble(w), 1, rows, inF, outF, false, false, c0: TestData.ToDouble(dx0));
        var dwExpected = MatmulReference.Gemm(TestData.ToDouble(dy), TestData.ToDouble(x), 1, outF, inF, rows, true, false, c0: TestData.ToDouble(dw0));
        Check.Close(ddx.ToArray(), dxExpected, 1e-5, 1e-5, "dx");
        Check.Close(ddw.ToArray(), dwExpected, 1e-5, 1e-5, "dw");
        var dbExpected = withBias ? MatmulReference.ColumnSums(TestData.ToDouble(dy), rows, outF, TestData.ToDouble(db0)) : TestData.ToDouble(db0);
        Check.Close(ddb.ToArray(), dbExpected, 1e-5, 1e-5, "db");
    }

    [TestCase(GemmVariant.Tiled, 37, 70, 9)]
    [TestCase(GemmVariant.Tiled, 5, 3, 66)]
    [TestCase(GemmVariant.RegisterBlocked, 37, 70, 9)]
    public void LinearParameterGradientsTogetherMatchTheReferencesAndAdd(GemmVariant variant, int rows, int outF, int inF)
    {
        // Tiled: one GEMM, [dw | db] += dyᵀ·[x | 1]; blocked: the GEMM and the column sums.
        var (dy, x) = (TestData.Uniform(rows * outF, 31), TestData.Uniform(rows * inF, 32));
        var (dw0, db0) = (TestData.Uniform(outF * inF, 33), TestData.Uniform(outF, 34));
        using var ddy = Upload(dy);
        using var dx = Upload(x);
        using var ddw = Upload(dw0);
        using var ddb = Upload(db0);
        Kernels.LinearParameterBackward(ddy.View, dx.View, ddw.View, ddb.View, rows, outF, inF, variant);
        var dw = MatmulReference.Gemm(TestData.ToDouble(dy), TestData.ToDouble(x), 1, outF, inF, rows, true, false, c0: TestData.ToDouble(dw0));
        Check.Close(ddw.ToArray(), dw, 1e-5, 1e-5, "dw");
        Check.Close(ddb.ToArray(), MatmulReference.ColumnSums(TestData.ToDouble(dy), rows, outF, TestData.ToDouble(db0)), 1e-5, 1e-5, "db");
    }

    [TestCase(1, 1)]
    [TestCase(5, 3)]
    [TestCase(33, 17)]
    [TestCase(6, 40)]
    public void BiasBackwardAddsColumnSums(int rows, int cols)
    {
        var dy = TestData.Uniform(rows * cols, 11);
        var db0 = TestData.Uniform(cols, 12);
        using var ddy = Upload(dy);
        using var ddb = Upload(db0);
        Kernels.BiasBackward(ddy.View, ddb.View, rows, cols);
        Check.Close(ddb.ToArray(), MatmulReference.ColumnSums(TestData.ToDouble(dy), rows, cols, TestData.ToDouble(db0)), 1e-5, 1e-6, "db");
    }

    [TestCase(GemmVariant.RegisterBlocked)]
    [TestCase(GemmVariant.Tiled)]
    public void SameInputsGiveBitIdenticalOutputs(GemmVariant variant)
    {
        const int batch = 2, m = 21, n = 13, k = 40;
        using var da = Upload(TestData.Uniform(batch * m * k, 13));
        using var db = Upload(TestData.Uniform(batch * k * n, 14));
        using var dbias = Upload(TestData.Uniform(n, 15));
        using var dc = Device.Pool.Rent<float>(batch * m * n);
        var dims = new GemmDims(batch, m, n, k, true, false);
        Kernels.GemmBias(da.View, db.View, dbias.View, dc.View, dims, variant: variant);
        var first = dc.ToArray();
        Kernels.GemmBias(da.View, db.View, dbias.View, dc.View, dims, variant: variant);
        Check.BitIdentical(first, dc.ToArray(), $"{variant} twice");
        Assert.That(first, Has.Some.Not.EqualTo(0f), "the output is not trivially zero");
    }

    [Test]
    public void BothVariantsGiveTheSameBitsOnTheCpu()
    {
        // Same summation order (k ascending, one accumulator); the tiled kernel only adds zero padding.
        const int batch = 2, m = 19, n = 23, k = 37;
        using var da = Upload(TestData.Uniform(batch * k * m, 16));
        using var db = Upload(TestData.Uniform(batch * n * k, 17));
        using var c1 = Device.Pool.Rent<float>(batch * m * n);
        using var c2 = Device.Pool.Rent<float>(batch * m * n);
        var dims = new GemmDims(batch, m, n, k, true, true);
        Kernels.Gemm(da.View, db.View, c1.View, dims, 0.3f, variant: GemmVariant.RegisterBlocked);
        Kernels.Gemm(da.View, db.View, c2.View, dims, 0.3f, variant: GemmVariant.Tiled);
        Check.BitIdentical(c1.ToArray(), c2.ToArray(), "register-blocked vs tiled");
    }

    [Test]
    public void WrongLengthsAreRejectedWithOneLine()
    {
        using var a = Device.Pool.Rent<float>(6);
        using var b = Device.Pool.Rent<float>(12);
        using var c = Device.Pool.Rent<float>(8);
        using var c9 = Device.Pool.Rent<float>(9);
        Kernels.Gemm(a.View, b.View, c.View, new GemmDims(1, 2, 4, 3)); // the consistent call is accepted
        var ex = Assert.Throws<ArgumentException>(() => Kernels.Gemm(a.View, b.View, c9.View, new GemmDims(1, 2, 4, 3)))!;
        Assert.That(ex.Message, Does.Contain("C must be [batch, M, N] = 8 elements, got 9"));
        Assert.That(ex.Message, Does.Not.Contain("\n"));
        Assert.Throws<ArgumentException>(() => Kernels.Gemm(a.View, b.View, c.View, new GemmDims(1, 2, 4, 4)));
        Assert.Throws<ArgumentException>(() => Kernels.Gemm(a.View, b.View, c.View, new GemmDims(0, 2, 4, 3)));
        Assert.Throws<ArgumentException>(() => Kernels.GemmBias(a.View, b.View, a.View, c.View, new GemmDims(1, 2, 4, 3)));
        Assert.Throws<ArgumentException>(() => Kernels.BiasBackward(c.View, a.View, 2, 4));
    }

    [Test]
    public void TheCpuAcceleratorDefaultsToTheRegisterBlockedVariant() =>
        Assert.That(Kernels.DefaultVariant, Is.EqualTo(GemmVariant.RegisterBlocked));

    // ---------------------------------------------------------------------------------------------
    // Ops
    // ---------------------------------------------------------------------------------------------

    [TestCase(true)]
    [TestCase(false)]
    public void LinearForwardMatchesTheReferenceAndRecordsOneStep(bool withBias)
    {
        const int rows = 6, inF = 9, outF = 5;
        var x = TestData.Uniform(rows * inF, 20);
        var w = TestData.Uniform(outF * inF, 21);
        var b = TestData.Uniform(outF, 22);
        using var tx = Tensor.FromArray(Device, x, 2, 3, inF); // leading dims flatten into rows
        using var tw = Tensor.FromArray(Device, w, outF, inF);
        using var tb = Tensor.FromArray(Device, b, outF);
        tw.RequireGrad();
        var tape = new Tape(Device);
        var y = tape.Linear(tx, tw, withBias ? tb : null);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, outF }));
        Check.Close(y.ToArray(), MatmulReference.Linear(TestData.ToDouble(x), TestData.ToDouble(w), withBias ? TestData.ToDouble(b) : null, rows, inF, outF),
                    1e-5, 1e-6, "linear");
        Assert.That(tape.RecordedSteps, Is.EqualTo(1));
        tape.Clear();

        using (tape.NoGrad()) tape.Linear(tx, tw, tb);
        Assert.That(tape.RecordedSteps, Is.EqualTo(0), "nothing is recorded under NoGrad");
        tape.Clear();
    }

    [Test]
    public void LinearRejectsMismatchedShapes()
    {
        using var x = Tensor.Zeros(Device, 4, 3);
        using var w = Tensor.Zeros(Device, 5, 2);
        using var b = Tensor.Zeros(Device, 4);
        using var w2 = Tensor.Zeros(Device, 5, 3);
        var tape = new Tape(Device);
        Assert.Throws<ArgumentException>(() => tape.Linear(x, w, null));
        Assert.Throws<ArgumentException>(() => tape.Linear(x, w2, b));
        tape.Clear();
    }

    [Test]
    public void LinearBackwardMatchesFiniteDifferences()
    {
        const int rows = 7, inF = 5, outF = 18;
        var x = TestData.Uniform(rows * inF, 30);
        var w = TestData.Uniform(outF * inF, 31);
        var b = TestData.Uniform(outF, 32);
        var dy = TestData.Uniform(rows * outF, 33);
        using var tx = Tensor.FromArray(Device, x, rows, inF);
        using var tw = Tensor.FromArray(Device, w, outF, inF);
        using var tb = Tensor.FromArray(Device, b, outF);
        tx.RequireGrad(); tw.RequireGrad(); tb.RequireGrad();
        var (gx, gw, gb) = (TapeGradient.Seed(tx, 34), TapeGradient.Seed(tw, 35), TapeGradient.Seed(tb, 36));
        var tape = new Tape(Device);
        TapeGradient.Backward(tape, tape.Linear(tx, tw, tb), dy);

        var (xd, wd, bd, dyd) = (TestData.ToDouble(x), TestData.ToDouble(w), TestData.ToDouble(b), TestData.ToDouble(dy));
        double L(double[] xs, double[] ws, double[] bs) => FiniteDifference.Dot(dyd, MatmulReference.Linear(xs, ws, bs, rows, inF, outF));
        // Gradients ADD to what the leaves held (seeded with gx, gw, gb).
        Check.Close(tx.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(v => L(v, wd, bd), xd), gx), 1e-3, 1e-4, "dx");
        Check.Close(tw.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(v => L(xd, v, bd), wd), gw), 1e-3, 1e-4, "dW");
        Check.Close(tb.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(v => L(xd, wd, v), bd), gb), 1e-3, 1e-4, "db");
    }

    [Test]
    public void BatchedMatmulForwardMatchesTheReference([Values] bool ta, [Values] bool tb)
    {
        const int batch = 3, m = 5, n = 7, k = 6;
        var a = TestData.Uniform(batch * m * k, 40);
        var b = TestData.Uniform(batch * k * n, 41);
        using var tA = Tensor.FromArray(Device, a, ta ? [batch, k, m] : [batch, m, k]);
        using var tB = Tensor.FromArray(Device, b, tb ? [batch, n, k] : [batch, k, n]);
        var tape = new Tape(Device);
        var c = tape.BatchedMatmul(tA, tB, ta, tb, 0.5f);
        Assert.That(c.Shape, Is.EqualTo(new[] { batch, m, n }));
        Check.Close(c.ToArray(), MatmulReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), batch, m, n, k, ta, tb, 0.5), 1e-5, 1e-6, "bmm");
        Assert.That(tape.RecordedSteps, Is.EqualTo(0), "no input requires a gradient");
        tape.Clear();
    }

    [Test]
    public void BatchedMatmulBackwardMatchesFiniteDifferences([Values] bool ta, [Values] bool tb)
    {
        const int batch = 2, m = 5, n = 17, k = 6;
        const double alpha = 0.7;
        var a = TestData.Uniform(batch * m * k, 50);
        var b = TestData.Uniform(batch * k * n, 51);
        var dy = TestData.Uniform(batch * m * n, 52);
        using var tA = Tensor.FromArray(Device, a, ta ? [batch, k, m] : [batch, m, k]);
        using var tB = Tensor.FromArray(Device, b, tb ? [batch, n, k] : [batch, k, n]);
        tA.RequireGrad(); tB.RequireGrad();
        var (ga, gb) = (TapeGradient.Seed(tA, 53), TapeGradient.Seed(tB, 54));
        var tape = new Tape(Device);
        var c = tape.BatchedMatmul(tA, tB, ta, tb, (float)alpha);
        Assert.That(tape.RecordedSteps, Is.EqualTo(1));
        TapeGradient.Backward(tape, c, dy);

        var (ad, bd, dyd) = (TestData.ToDouble(a), TestData.ToDouble(b), TestData.ToDouble(dy));
        double L(double[] x, double[] y) => FiniteDifference.Dot(dyd, MatmulReference.Gemm(x, y, batch, m, n, k, ta, tb, alpha));
        Check.Close(tA.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(v => L(v, bd), ad), ga), 1e-3, 1e-4, "da");
        Check.Close(tB.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(v => L(ad, v), bd), gb), 1e-3, 1e-4, "db");
    }

    [Test]
    public void BatchedMatmulRejectsMismatchedShapes()
    {
        using var a = Tensor.Zeros(Device, 2, 3, 4);
        using var b = Tensor.Zeros(Device, 2, 5, 6);
        using var c = Tensor.Zeros(Device, 3, 4, 6);
        using var flat = Tensor.Zeros(Device, 3, 4);
        var tape = new Tape(Device);
        Assert.Throws<ArgumentException>(() => tape.BatchedMatmul(a, b));
        Assert.Throws<ArgumentException>(() => tape.BatchedMatmul(a, c));
        Assert.Throws<ArgumentException>(() => tape.BatchedMatmul(flat, b));
        tape.Clear();
    }
}

/// <summary>
/// Runs a tape's backward pass from a tensor-valued output: builds the scalar L = Σ upstream·y with the
/// tape's own <see cref="MatmulOps.BatchedMatmul"/> ([1,1,n]·[1,n,1]) — no reduction op is needed — so
/// every input's gradient becomes the vector–Jacobian product upstream·∂y/∂input.
/// </summary>
internal static class TapeGradient
{
    public static void Backward(Tape tape, Tensor y, float[] upstream)
    {
        Assert.That(upstream.Length, Is.EqualTo(y.Length), "upstream gradient length");
        using var u = Tensor.FromArray(tape.Device, upstream, 1, y.Length, 1);
        var loss = tape.BatchedMatmul(tape.Reshape(y, 1, 1, y.Length), u);
        tape.Backward(loss);
    }

    /// <summary>Fills a leaf's gradient with random values (to prove backward adds) and returns them.</summary>
    public static float[] Seed(Tensor leaf, int seed)
    {
        var g = TestData.Uniform(leaf.Length, seed);
        leaf.Grad!.CopyFrom(g);
        return g;
    }

    /// <summary>expected[i] + seed[i].</summary>
    public static double[] Plus(double[] expected, float[] seed) => expected.Select((e, i) => e + seed[i]).ToArray();
}
