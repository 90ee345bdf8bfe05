using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Norm;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Reduce;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class NormTests
{
    private const float Eps = 1e-5f;
    // Barrier variants are tested here: keep them off the suite-wide device (see TestDevice.Grouped).
    private static ComputeDevice Device => TestDevice.Grouped;
    private static NormKernels Kernels => Device.Kernels<NormKernels>();

    // The tree variant's group width in most tests: barriers of 256 OS threads are very slow on the CPU
    // accelerator, and the tree code is the same for every power of two (FullWidthTree covers 256).
    private const int TreeWidth = 32;

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    private static float[] Ramp(int n, float start, float step)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = start + step * i;
        return a;
    }

    // Shapes: N, C, G, S. Not multiples of 4 or of the tree width; M = C/G·S and S above the tree width
    // so the tree variant's threads loop; S = 1 is the [N, C] case. The 28×28 one is for the loop variant only
    // (the tree variant is slow on the CPU accelerator).
    private static readonly object[] Cases =
    {
        new object[] { 2, 8, 4, 49, ReductionVariant.PerThreadLoop },
        new object[] { 2, 8, 4, 49, ReductionVariant.GroupTree },
        new object[] { 1, 6, 3, 5, ReductionVariant.PerThreadLoop },
        new object[] { 1, 6, 3, 5, ReductionVariant.GroupTree },
        new object[] { 2, 4, 2, 150, ReductionVariant.GroupTree },
        new object[] { 4, 6, 2, 1, ReductionVariant.PerThreadLoop },
        new object[] { 4, 6, 2, 1, ReductionVariant.GroupTree },
        new object[] { 3, 16, 8, 28 * 28, ReductionVariant.PerThreadLoop },
    };

    [TestCaseSource(nameof(Cases))]
    public void ForwardMatchesTheDoubleReference(int n, int c, int g, int s, ReductionVariant variant)
    {
        var dims = new GroupNormDims(n, c, g, s);
        var x = TestData.Uniform(dims.Length, 11, 2f);
        for (int i = 0; i < x.Length; i++) x[i] += 0.5f; // non-zero mean
        var gamma = TestData.Uniform(c, 12, 1.5f);
        var beta = TestData.Uniform(c, 13);
        var (ry, rmean, rrstd) = NormReference.GroupNorm(TestData.ToDouble(x), TestData.ToDouble(gamma), TestData.ToDouble(beta), n, c, g, s, Eps);

        using var xb = Upload(x);
        using var gb = Upload(gamma);
        using var bb = Upload(beta);
        using var y = Device.Pool.Rent<float>(dims.Length);
        using var mean = Device.Pool.Rent<float>(n * g);
        using var rstd = Device.Pool.Rent<float>(n * g);
        Kernels.Forward(xb.View, gb.View, bb.View, y.View, mean.View, rstd.View, dims, Eps, variant, TreeWidth);

        Check.Close(mean.ToArray(), rmean, 1e-5, 1e-6, $"mean {dims} {variant}");
        Check.Close(rstd.ToArray(), rrstd, 1e-5, 1e-6, $"rstd {dims} {variant}");
        Check.Close(y.ToArray(), ry, 1e-5, 1e-5, $"y {dims} {variant}");
    }

    [TestCase(ReductionVariant.PerThreadLoop)]
    [TestCase(ReductionVariant.GroupTree)]
    public void ForwardIsStableForALargeMean(ReductionVariant variant)
    {
        // x = 100 + U(−1, 1): E[x²] − E[x]² in float would lose ~1% of the variance (E[x²] ≈ 10⁴,
        // float spacing there ~1e-3); the two-pass form keeps y within 1e-4 of the double reference.
        var dims = new GroupNormDims(2, 4, 2, 100);
        var x = TestData.Uniform(dims.Length, 21);
        for (int i = 0; i < x.Length; i++) x[i] += 100f;
        var gamma = Enumerable.Repeat(1f, 4).ToArray();
        var beta = new float[4];
        var (ry, _, _) = NormReference.GroupNorm(TestData.ToDouble(x), TestData.ToDouble(gamma), TestData.ToDouble(beta), 2, 4, 2, 100, Eps);
        using var xb = Upload(x);
        using var gb = Upload(gamma);
        using var bb = Upload(beta);
        using var y = Device.Pool.Rent<float>(dims.Length);
        using var mean = Device.Pool.Rent<float>(4);
        using var rstd = Device.Pool.Rent<float>(4);
        Kernels.Forward(xb.View, gb.View, bb.View, y.View, mean.View, rstd.View, dims, Eps, variant, TreeWidth);
        Check.Close(y.ToArray(), ry, 0, 1e-4, $"y with mean 100 ({variant})");
    }

    [TestCaseSource(nameof(Cases))]
    public void BackwardAddsTheReferenceGradientsWhichMatchFiniteDifferences(int n, int c, int g, int s, ReductionVariant variant)
    {
        var dims = new GroupNormDims(n, c, g, s);
        var x = TestData.Uniform(dims.Length, 31, 2f);
        var gamma = TestData.Uniform(c, 32, 1.5f);
        var beta = TestData.Uniform(c, 33);
        var dy = TestData.Uniform(dims.Length, 34);
        var priorX = TestData.Uniform(dims.Length, 35);
        var priorGamma = TestData.Uniform(c, 36);
        var priorBeta = TestData.Uniform(c, 37);
        double[] xd = TestData.ToDouble(x), gd = TestData.ToDouble(gamma), bd = TestData.ToDouble(beta), dyd = TestData.ToDouble(dy);

        using var xb = Upload(x);
        using var gb = Upload(gamma);
        using var bb = Upload(beta);
        using var dyb = Upload(dy);
        using var y = Device.Pool.Rent<float>(dims.Length);
        using var mean = Device.Pool.Rent<float>(n * g);
        using var rstd = Device.Pool.Rent<float>(n * g);
        using var dx = Upload(priorX);
        using var dgamma = Upload(priorGamma);
        using var dbeta = Upload(priorBeta);
        Kernels.Forward(xb.View, gb.View, bb.View, y.View, mean.View, rstd.View, dims, Eps, variant, TreeWidth);
        Kernels.Backward(xb.View, gb.View, bb.View, mean.View, rstd.View, dyb.View, dx.View, dgamma.View, dbeta.View, dims, variant, TreeWidth);

        // Kernel (minus what was there before: backward adds) vs the analytic double reference, everywhere.
        var (rdx, rdg, rdb) = NormReference.GroupNormBackward(xd, gd, dyd, n, c, g, s, Eps);
        var gotDx = Minus(dx.ToArray(), priorX);
        var gotDg = Minus(dgamma.ToArray(), priorGamma);
        var gotDb = Minus(dbeta.ToArray(), priorBeta);
        Check.Close(gotDx, rdx, 1e-4, 2e-5, $"dx {dims} {variant}");
        Check.Close(gotDg, rdg, 1e-4, 1e-4, $"dgamma {dims} {variant}");
        Check.Close(gotDb, rdb, 1e-4, 1e-4, $"dbeta {dims} {variant}");

        // The reference (and so the kernel) vs central differences of L = Σ dy·y(x, γ, β), on a subset of x.
        var probe = Enumerable.Range(0, 24).Select(k => (int)((long)k * 7919 % dims.Length)).Distinct().ToArray();
        var fdx = FiniteDifference.Gradient(v => FiniteDifference.Dot(dyd, NormReference.GroupNorm(v, gd, bd, n, c, g, s, Eps).Y), xd, 1e-4, probe);
        var fdg = FiniteDifference.Gradient(v => FiniteDifference.Dot(dyd, NormReference.GroupNorm(xd, v, bd, n, c, g, s, Eps).Y), gd, 1e-4);
        var fdb = FiniteDifference.Gradient(v => FiniteDifference.Dot(dyd, NormReference.GroupNorm(xd, gd, v, n, c, g, s, Eps).Y), bd, 1e-4);
        foreach (int i in probe)
        {
            Assert.That(rdx[i], Is.EqualTo(fdx[i]).Within(1e-6 + 1e-5 * Math.Abs(fdx[i])), $"reference dx[{i}] vs finite differences");
            Assert.That(gotDx[i], Is.EqualTo(fdx[i]).Within(3e-5 + 1e-4 * Math.Abs(fdx[i])), $"kernel dx[{i}] vs finite differences ({variant})");
        }
        Check.Close(gotDg, fdg, 1e-4, 1e-4, $"dgamma vs finite differences {dims} {variant}");
        Check.Close(gotDb, fdb, 1e-4, 1e-4, $"dbeta vs finite differences {dims} {variant}");
    }

    [Test]
    public void FullWidthTreeMatchesTheReference()
    {
        // One group of 256 threads for the statistics (M = 300), two for the backward partials (S = 300).
        const int n = 1, c = 2, g = 1, s = 300;
        var dims = new GroupNormDims(n, c, g, s);
        var x = TestData.Uniform(dims.Length, 81, 2f);
        var gamma = TestData.Uniform(c, 82);
        var dy = TestData.Uniform(dims.Length, 83);
        var (ry, _, _) = NormReference.GroupNorm(TestData.ToDouble(x), TestData.ToDouble(gamma), TestData.ToDouble(gamma), n, c, g, s, Eps);
        var (rdx, rdg, rdb) = NormReference.GroupNormBackward(TestData.ToDouble(x), TestData.ToDouble(gamma), TestData.ToDouble(dy), n, c, g, s, Eps);
        using var xb = Upload(x);
        using var gb = Upload(gamma);
        using var dyb = Upload(dy);
        using var y = Device.Pool.Rent<float>(dims.Length);
        using var mean = Device.Pool.Rent<float>(1);
        using var rstd = Device.Pool.Rent<float>(1);
        using var dx = Device.Pool.RentZeroed<float>(dims.Length);
        using var dgamma = Device.Pool.RentZeroed<float>(c);
        using var dbeta = Device.Pool.RentZeroed<float>(c);
        Kernels.Forward(xb.View, gb.View, gb.View, y.View, mean.View, rstd.View, dims, Eps, ReductionVariant.GroupTree, 256);
        Kernels.Backward(xb.View, gb.View, gb.View, mean.View, rstd.View, dyb.View, dx.View, dgamma.View, dbeta.View, dims, ReductionVariant.GroupTree, 256);
        Check.Close(y.ToArray(), ry, 1e-5, 1e-5, "y");
        Check.Close(dx.ToArray(), rdx, 1e-4, 2e-5, "dx");
        Check.Close(dgamma.ToArray(), rdg, 1e-4, 1e-4, "dgamma");
        Check.Close(dbeta.ToArray(), rdb, 1e-4, 1e-4, "dbeta");
    }

    [Test]
    public void BackwardWritesOnlyTheRequestedGradients()
    {
        var dims = new GroupNormDims(2, 6, 3, 10);
        var x = TestData.Uniform(dims.Length, 41);
        var gamma = TestData.Uniform(6, 42);
        var dy = TestData.Uniform(dims.Length, 43);
        var (rdx, rdg, rdb) = NormReference.GroupNormBackward(TestData.ToDouble(x), TestData.ToDouble(gamma), TestData.ToDouble(dy), 2, 6, 3, 10, Eps);
        using var xb = Upload(x);
        using var gb = Upload(gamma);
        using var dyb = Upload(dy);
        using var y = Device.Pool.Rent<float>(dims.Length);
        using var mean = Device.Pool.Rent<float>(6);
        using var rstd = Device.Pool.Rent<float>(6);
        using var dx = Device.Pool.RentZeroed<float>(dims.Length);
        using var dgamma = Device.Pool.RentZeroed<float>(6);
        using var dbeta = Device.Pool.RentZeroed<float>(6);
        Kernels.Forward(xb.View, gb.View, gb.View, y.View, mean.View, rstd.View, dims);

        Kernels.Backward(xb.View, gb.View, gb.View, mean.View, rstd.View, dyb.View, default, dgamma.View, default, dims);
        Check.Close(dgamma.ToArray(), rdg, 1e-4, 1e-5, "dgamma alone");
        Assert.That(dx.ToArray(), Is.All.EqualTo(0f), "dx untouched");
        Assert.That(dbeta.ToArray(), Is.All.EqualTo(0f), "dbeta untouched");

        Kernels.Backward(xb.View, gb.View, gb.View, mean.View, rstd.View, dyb.View, dx.View, default, dbeta.View, dims);
        Check.Close(dx.ToArray(), rdx, 1e-4, 1e-5, "dx without dgamma");
        Check.Close(dbeta.ToArray(), rdb, 1e-4, 1e-5, "dbeta without dgamma");
        Check.Close(dgamma.ToArray(), rdg, 1e-4, 1e-5, "dgamma unchanged by the second call");
    }

    [TestCase(ReductionVariant.PerThreadLoop)]
    [TestCase(ReductionVariant.GroupTree)]
    public void ForwardAndBackwardGiveTheSameBitsEveryRun(ReductionVariant variant)
    {
        var dims = new GroupNormDims(2, 8, 4, 37);
        using var xb = Upload(TestData.Uniform(dims.Length, 51, 3f));
        using var gb = Upload(TestData.Uniform(8, 52));
        using var bb = Upload(TestData.Uniform(8, 53));
        using var dyb = Upload(TestData.Uniform(dims.Length, 54));
        float[][] Run()
        {
            using var y = Device.Pool.Rent<float>(dims.Length);
            using var mean = Device.Pool.Rent<float>(8);
            using var rstd = Device.Pool.Rent<float>(8);
            using var dx = Device.Pool.RentZeroed<float>(dims.Length);
            using var dg = Device.Pool.RentZeroed<float>(8);
            using var db = Device.Pool.RentZeroed<float>(8);
            Kernels.Forward(xb.View, gb.View, bb.View, y.View, mean.View, rstd.View, dims, Eps, variant, TreeWidth);
            Kernels.Backward(xb.View, gb.View, bb.View, mean.View, rstd.View, dyb.View, dx.View, dg.View, db.View, dims, variant, TreeWidth);
            return [y.ToArray(), rstd.ToArray(), dx.ToArray(), dg.ToArray(), db.ToArray()];
        }
        var first = Run();
        var second = Run();
        string[] names = ["y", "rstd", "dx", "dgamma", "dbeta"];
        for (int i = 0; i < first.Length; i++) Check.BitIdentical(first[i], second[i], $"{names[i]} ({variant})");
    }

    [Test]
    public void AutoPicksTheBarrierFreeVariantOnTheCpu() =>
        Assert.That(Device.Kernels<ReduceKernels>().Resolve(ReductionVariant.Auto), Is.EqualTo(ReductionVariant.PerThreadLoop));

    [Test]
    public void BadShapesAreRejectedWithOneClearLine()
    {
        var e = Assert.Throws<ArgumentException>(() => _ = new GroupNormDims(2, 6, 4, 3))!;
        Assert.That(e.Message, Does.Contain("divisible").And.Not.Contain("\n"));
        var dims = new GroupNormDims(1, 4, 2, 3);
        using var x = Device.Pool.Rent<float>(12);
        using var gamma = Device.Pool.Rent<float>(3);
        using var stats = Device.Pool.Rent<float>(2);
        e = Assert.Throws<ArgumentException>(() => Kernels.Forward(x.View, gamma.View, gamma.View, x.View, stats.View, stats.View, dims))!;
        Assert.That(e.Message, Does.Contain("gamma of 4 elements"));

        var tape = new Tape(Device);
        using var t = Tensor.Zeros(Device, 2, 6, 3, 3);
        using var g6 = Tensor.Zeros(Device, 6);
        using var g5 = Tensor.Zeros(Device, 5);
        Assert.That(Assert.Throws<ArgumentException>(() => tape.GroupNorm(t, g6, g6, 4))!.Message, Does.Contain("6 channels cannot be split into 4 groups"));
        Assert.That(Assert.Throws<ArgumentException>(() => tape.GroupNorm(t, g5, g6, 3))!.Message, Does.Contain("gamma must be [6]"));
        tape.Clear();
    }

    // ---- the op, through the tape ----

    [Test]
    public void GroupNormOpBackpropagatesAnMseLossToInputScaleAndShift()
    {
        const int n = 2, c = 8, g = 4, h = 5, w = 3, s = h * w;
        var xv = TestData.Uniform(n * c * s, 61, 2f);
        var gv = TestData.Uniform(c, 62, 1.5f);
        var bv = TestData.Uniform(c, 63);
        var tv = TestData.Uniform(n * c * s, 64);
        using var x = Tensor.FromArray(Device, xv, n, c, h, w);
        using var gamma = Tensor.FromArray(Device, gv, c);
        using var beta = Tensor.FromArray(Device, bv, c);
        using var target = Tensor.FromArray(Device, tv, n, c, h, w);
        x.RequireGrad();
        gamma.RequireGrad();
        beta.RequireGrad();

        var tape = new Tape(Device);
        var y = tape.GroupNorm(x, gamma, beta, g);
        Assert.That(y.Shape, Is.EqualTo(new[] { n, c, h, w }));
        double[] xd = TestData.ToDouble(xv), gd = TestData.ToDouble(gv), bd = TestData.ToDouble(bv), td = TestData.ToDouble(tv);
        Check.Close(y.ToArray(), NormReference.GroupNorm(xd, gd, bd, n, c, g, s, Eps).Y, 1e-5, 1e-5, "op forward");
        var loss = tape.MseLoss(y, target);
        double Loss(double[] xs, double[] gs, double[] bs)
        {
            var yr = NormReference.GroupNorm(xs, gs, bs, n, c, g, s, Eps).Y;
            double sum = 0;
            for (int i = 0; i < yr.Length; i++) sum += (yr[i] - td[i]) * (yr[i] - td[i]);
            return sum / yr.Length;
        }
        Assert.That(loss.ToScalar(), Is.EqualTo(Loss(xd, gd, bd)).Within(1e-5), "loss");
        tape.Backward(loss);

        Check.Close(x.Grad!.ToArray(), FiniteDifference.Gradient(v => Loss(v, gd, bd), xd), 1e-3, 1e-6, "dL/dx");
        Check.Close(gamma.Grad!.ToArray(), FiniteDifference.Gradient(v => Loss(xd, v, bd), gd), 1e-3, 1e-6, "dL/dgamma");
        Check.Close(beta.Grad!.ToArray(), FiniteDifference.Gradient(v => Loss(xd, gd, v), bd), 1e-3, 1e-6, "dL/dbeta");
    }

    [Test]
    public void GroupNormOpGivesGammaAloneAGradientWhenOnlyItRequiresOne()
    {
        const int n = 1, c = 4, g = 2, s = 6;
        var xv = TestData.Uniform(n * c * s, 71);
        var gv = TestData.Uniform(c, 72);
        var upstream = TestData.Uniform(n * c * s, 73); // L = mean((y − u)²) has dL/dy = 2(y − u)/n·c·s
        using var x = Tensor.FromArray(Device, xv, n, c, s);
        using var gamma = Tensor.FromArray(Device, gv, c);
        using var beta = Tensor.Zeros(Device, c);
        using var target = Tensor.FromArray(Device, upstream, n, c, s);
        gamma.RequireGrad();
        var tape = new Tape(Device);
        var loss = tape.MseLoss(tape.GroupNorm(x, gamma, beta, g), target);
        tape.Backward(loss);
        Assert.That(x.Grad, Is.Null, "x does not require a gradient");
        Assert.That(beta.Grad, Is.Null, "beta does not require a gradient");
        double[] xd = TestData.ToDouble(xv), ud = TestData.ToDouble(upstream);
        double Loss(double[] gs)
        {
            var yr = NormReference.GroupNorm(xd, gs, new double[c], n, c, g, s, Eps).Y;
            return yr.Select((v, i) => (v - ud[i]) * (v - ud[i])).Sum() / yr.Length;
        }
        Check.Close(gamma.Grad!.ToArray(), FiniteDifference.Gradient(Loss, TestData.ToDouble(gv)), 1e-3, 1e-6, "dL/dgamma");
    }

    // ---- group norm with the activation fused in ----

    // The fused kernels against the two ops they replace (the plain norm, then the activation's own kernels, each
    // tested against its reference above and in ElementwiseTests): the same bits, forward and every gradient, so the
    // U-Net computes the same function. γ and β are not 1 and 0, so z = x̂γ + β is recomputed in the backward for real.
    // With dropout's mask fused in too (a GPU's ResBlock), against the dropout kernels after the activation's: the key's
    // offset is not a multiple of 4, so the element-wise mask and the dropout kernel's four-per-block draws must line up.
    [TestCase(ReductionVariant.PerThreadLoop, "silu", 0f)]
    [TestCase(ReductionVariant.GroupTree, "silu", 0f)]
    [TestCase(ReductionVariant.PerThreadLoop, "gelu", 0f)]
    [TestCase(ReductionVariant.GroupTree, "gelu", 0f)]
    [TestCase(ReductionVariant.PerThreadLoop, "silu", 0.3f)]
    [TestCase(ReductionVariant.GroupTree, "silu", 0.3f)]
    public void FusedActivationGivesTheBitsOfTheNormThenTheActivation(ReductionVariant variant, string activation, float dropout)
    {
        var key = new PhiloxKey(0xDD9Au, 5, 4_000_000_001UL);
        if (activation == "silu") CheckFused(new SiluOp(), variant, dropout, key);
        else CheckFused(new GeluOp(), variant, dropout, key);
    }

    private static void CheckFused<TOp>(TOp op, ReductionVariant variant, float dropout, PhiloxKey key) where TOp : struct, IUnaryOp
    {
        if (dropout > 0f) CheckFused(op, new DropoutMask(key, dropout), variant, dropout, key);
        else CheckFused(op, new NoMask(), variant, dropout, key);
    }

    private static void CheckFused<TOp, TMask>(TOp op, TMask mask, ReductionVariant variant, float dropout, PhiloxKey key)
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        var dims = new GroupNormDims(2, 8, 4, 37);
        using var xb = Upload(TestData.Uniform(dims.Length, 91, 3f));
        using var gb = Upload(TestData.Uniform(8, 92, 1.5f));
        using var bb = Upload(TestData.Uniform(8, 93));
        using var dyb = Upload(TestData.Uniform(dims.Length, 94));
        var elementwise = Device.Kernels<ElementwiseKernels>();
        float[][] Run(bool fused)
        {
            using var y = Device.Pool.Rent<float>(dims.Length);
            using var mean = Device.Pool.Rent<float>(dims.StatCount);
            using var rstd = Device.Pool.Rent<float>(dims.StatCount);
            using var dx = Device.Pool.RentZeroed<float>(dims.Length);
            using var dg = Device.Pool.RentZeroed<float>(8);
            using var db = Device.Pool.RentZeroed<float>(8);
            if (fused)
            {
                Kernels.Forward(op, mask, xb.View, gb.View, bb.View, y.View, mean.View, rstd.View, dims, Eps, variant, TreeWidth);
                Kernels.Backward(op, mask, xb.View, gb.View, bb.View, mean.View, rstd.View, dyb.View, dx.View, dg.View, db.View, dims, variant, TreeWidth);
            }
            else
            {
                using var z = Device.Pool.Rent<float>(dims.Length);
                using var dz = Device.Pool.RentZeroed<float>(dims.Length); // as the tape hands it out
                using var a = Device.Pool.Rent<float>(dims.Length);
                using var da = Device.Pool.RentZeroed<float>(dims.Length);
                Kernels.Forward(xb.View, gb.View, bb.View, z.View, mean.View, rstd.View, dims, Eps, variant, TreeWidth);
                elementwise.Unary(op, z.View, dropout > 0f ? a.View : y.View);
                if (dropout > 0f)
                {
                    elementwise.Dropout(a.View, y.View, dropout, key);
                    elementwise.DropoutBackward(dyb.View, da.View, dropout, key);
                }
                elementwise.UnaryBackward(op, z.View, dropout > 0f ? da.View : dyb.View, dz.View);
                Kernels.Backward(xb.View, gb.View, bb.View, mean.View, rstd.View, dz.View, dx.View, dg.View, db.View, dims, variant, TreeWidth);
            }
            return [y.ToArray(), dx.ToArray(), dg.ToArray(), db.ToArray()];
        }
        var fusedRun = Run(fused: true);
        var separate = Run(fused: false);
        string[] names = ["y", "dx", "dgamma", "dbeta"];
        for (int i = 0; i < names.Length; i++) Check.BitIdentical(fusedRun[i], separate[i], $"{names[i]}: {typeof(TOp).Name}, {typeof(TMask).Name} fused vs after the norm ({variant})");
        if (dropout > 0f)
        {
            int dropped = fusedRun[0].Count(v => v == 0f);
            Assert.That(dropped, Is.InRange(dims.Length / 5, dims.Length * 2 / 5), $"about {dropout:P0} of y is dropped");
        }
    }

    // Also with dropout after the activation, on the CPU's path (the separate dropout op) and on a GPU's (the mask fused
    // into the norm's launches): both meet the same reference, whose mask is Philox's numbers drawn on the host.
    [TestCase(false, 0f)]
    [TestCase(false, 0.25f)]
    [TestCase(true, 0.25f)]
    public void FusedOpOnTheTapeMatchesTheReferenceAndFiniteDifferences(bool gpuVariants, float dropout)
    {
        // L = mean((mask·silu(GroupNorm(x)) − u)²) in double: the reference the fused op's forward and three gradients meet.
        const int n = 2, c = 6, g = 3, s = 10;
        var key = new PhiloxKey(42, 9, 7);
        var xv = TestData.Uniform(n * c * s, 101, 2f);
        var gv = TestData.Uniform(c, 102, 1.5f);
        var bv = TestData.Uniform(c, 103);
        var uv = TestData.Uniform(n * c * s, 104);
        using var x = Tensor.FromArray(Device, xv, n, c, s);
        using var gamma = Tensor.FromArray(Device, gv, c);
        using var beta = Tensor.FromArray(Device, bv, c);
        using var target = Tensor.FromArray(Device, uv, n, c, s);
        x.RequireGrad();
        gamma.RequireGrad();
        beta.RequireGrad();
        double[] xd = TestData.ToDouble(xv), gd = TestData.ToDouble(gv), bd = TestData.ToDouble(bv), ud = TestData.ToDouble(uv);
        double[] mask = [.. Enumerable.Range(0, n * c * s).Select(i => Philox.Uniform(key.Seed, key.Stream, key.Offset + (ulong)i) >= dropout ? 1.0 / (1 - dropout) : 0.0)];
        double[] Reference(double[] xs, double[] gs, double[] bs) =>
            NormReference.GroupNorm(xs, gs, bs, n, c, g, s, Eps).Y.Select((z, i) => mask[i] * z / (1 + Math.Exp(-z))).ToArray();
        double Loss(double[] xs, double[] gs, double[] bs) => Reference(xs, gs, bs).Select((v, i) => (v - ud[i]) * (v - ud[i])).Sum() / ud.Length;

        Device.ChooseGpuVariants = gpuVariants;
        try
        {
            var tape = new Tape(Device) { Training = true };
            var before = Device.Counters.Snapshot();
            var y = tape.GroupNorm(x, gamma, beta, g, new SiluOp(), Eps, dropout, key);
            Assert.That((Device.Counters.Snapshot() - before).Launches, Is.EqualTo(dropout > 0f && !gpuVariants ? 2 : 1), "launches of the forward");
            Check.Close(y.ToArray(), Reference(xd, gd, bd), 1e-5, 1e-5, "fused forward");
            tape.Backward(tape.MseLoss(y, target));
            Check.Close(x.Grad!.ToArray(), FiniteDifference.Gradient(v => Loss(v, gd, bd), xd), 1e-3, 1e-6, "dL/dx");
            Check.Close(gamma.Grad!.ToArray(), FiniteDifference.Gradient(v => Loss(xd, v, bd), gd), 1e-3, 1e-6, "dL/dgamma");
            Check.Close(beta.Grad!.ToArray(), FiniteDifference.Gradient(v => Loss(xd, gd, v), bd), 1e-3, 1e-6, "dL/dbeta");
        }
        finally
        {
            Device.ChooseGpuVariants = false;
        }
    }

    private static float[] Minus(float[] a, float[] b) => a.Select((v, i) => v - b[i]).ToArray();
}
