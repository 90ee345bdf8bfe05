using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class ReduceTests
{
    // Barrier variants are tested here: keep them off the suite-wide device (see TestDevice.Grouped).
    private static ComputeDevice Device => TestDevice.Grouped;
    private static ReduceKernels Kernels => Device.Kernels<ReduceKernels>();

    // The tree variant's group width in these tests: barriers of 256 OS threads are very slow on the CPU
    // accelerator; the tree code is the same for every power of two (FullWidthTree covers 256).
    private const int TreeWidth = 32;

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    private static float Sum(DeviceBuffer<float> x, ReductionVariant variant, int width = TreeWidth, float scale = 1f)
    {
        using var output = Device.Pool.Rent<float>(1);
        Kernels.Sum(x.View, output.View, scale, variant, width);
        return output.ToArray()[0];
    }

    private static float SumOfSquaredDifferences(DeviceBuffer<float> a, DeviceBuffer<float> b, ReductionVariant variant, int width = TreeWidth, float scale = 1f)
    {
        using var output = Device.Pool.Rent<float>(1);
        Kernels.SumOfSquaredDifferences(a.View, b.View, output.View, scale, variant, width);
        return output.ToArray()[0];
    }

    private static double FloatUlp(double v)
    {
        float f = MathF.Abs((float)v);
        return (double)MathF.BitIncrement(f) - f;
    }

    // Values k/16, |k| ≤ 16 (and k/4 with |k| ≤ 2 for differences): every partial sum of up to 10⁶ of
    // them is exact in float (≤ 24 significant bits), so the result must equal the double sum exactly —
    // one element dropped or counted twice would show.
    private static float[] Dyadic(int n, int seed, int denominator, int maxNumerator)
    {
        var rng = new System.Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = rng.Next(-maxNumerator, maxNumerator + 1) / (float)denominator;
        return a;
    }

    // Length 1000003 for the loop variant (the CPU one); the tree variant gets 20497 = 5 full segments + 17,
    // which is already 6 groups and a multi-partial stage 2 (each group costs much on the CPU accelerator).
    private static readonly object[] Lengths =
    {
        new object[] { 1, ReductionVariant.PerThreadLoop },
        new object[] { 1000, ReductionVariant.PerThreadLoop },
        new object[] { 1000003, ReductionVariant.PerThreadLoop },
        new object[] { 1, ReductionVariant.GroupTree },
        new object[] { 1000, ReductionVariant.GroupTree },
        new object[] { 20497, ReductionVariant.GroupTree },
    };

    [TestCaseSource(nameof(Lengths))]
    public void SumMatchesTheDoubleSumAndRepeatsBitForBit(int n, ReductionVariant variant)
    {
        var x = TestData.Uniform(n, 100 + n);
        using var xb = Upload(x);
        float first = Sum(xb, variant);
        float second = Sum(xb, variant);
        // Rounding error of a float sum grows like u·√(#adds)·|partial sums| (u = 2⁻²⁴); observed ≤ 7e-9·Σ|x|
        // for these lengths. Allowed: 4e-8·Σ|x| plus one unit in the last place of the result. (The exact
        // test below is the one that catches a dropped or repeated element.)
        double expected = ReduceReference.Sum(x);
        Assert.That(first, Is.EqualTo(expected).Within(4e-8 * ReduceReference.SumAbs(x) + FloatUlp(expected)), $"Σx, n={n}, {variant}");
        Check.BitIdentical([first], [second], $"two runs, n={n}, {variant}");
    }

    [TestCaseSource(nameof(Lengths))]
    public void SumOfSquaredDifferencesMatchesTheDoubleSumAndRepeatsBitForBit(int n, ReductionVariant variant)
    {
        var a = TestData.Uniform(n, 200 + n);
        var b = TestData.Uniform(n, 300 + n);
        using var ab = Upload(a);
        using var bb = Upload(b);
        float scale = 1f / n;
        float first = SumOfSquaredDifferences(ab, bb, variant, scale: scale);
        float second = SumOfSquaredDifferences(ab, bb, variant, scale: scale);
        double expected = ReduceReference.SumOfSquaredDifferences(a, b) / n;
        // All terms positive: relative error observed ≤ 3e-7; allowed 2e-6.
        Assert.That(first, Is.EqualTo(expected).Within(2e-6 * expected), $"mean (a−b)², n={n}, {variant}");
        Check.BitIdentical([first], [second], $"two runs, n={n}, {variant}");
    }

    [TestCase(1000003, ReductionVariant.PerThreadLoop)]
    [TestCase(20497, ReductionVariant.GroupTree)]
    public void ExactlyRepresentableSumsAreExact(int n, ReductionVariant variant)
    {
        var x = Dyadic(n, 7, 16, 16);
        var a = Dyadic(n, 8, 4, 2);
        var b = Dyadic(n, 9, 4, 2);
        using var xb = Upload(x);
        using var ab = Upload(a);
        using var bb = Upload(b);
        Assert.That(Sum(xb, variant), Is.EqualTo(ReduceReference.Sum(x)), "Σx");
        Assert.That(Sum(xb, variant, scale: 0.25f), Is.EqualTo(ReduceReference.Sum(x) / 4), "Σx / 4");
        Assert.That(SumOfSquaredDifferences(ab, bb, variant), Is.EqualTo(ReduceReference.SumOfSquaredDifferences(a, b)), "Σ(a−b)²");
    }

    [Test]
    public void FullWidthTreeIsExact()
    {
        // One group of 256 threads in stage 1 (300 elements), a single thread in stage 2.
        var x = Dyadic(300, 11, 16, 16);
        using var xb = Upload(x);
        Assert.That(Sum(xb, ReductionVariant.GroupTree, 256), Is.EqualTo(ReduceReference.Sum(x)));
    }

    [Test]
    public void PublicEntryPointsUseTheDevicesVariant()
    {
        Assert.That(Kernels.Resolve(ReductionVariant.Auto), Is.EqualTo(ReductionVariant.PerThreadLoop));
        var x = TestData.Uniform(5000, 12);
        var y = TestData.Uniform(5000, 13);
        using var xb = Upload(x);
        using var yb = Upload(y);
        using var output = Device.Pool.Rent<float>(1);
        Kernels.Sum(xb.View, output.View);
        Assert.That(output.ToArray()[0], Is.EqualTo(Sum(xb, ReductionVariant.PerThreadLoop)), "Sum");
        Kernels.SumOfSquaredDifferences(xb.View, yb.View, output.View, 0.5f);
        Assert.That(output.ToArray()[0], Is.EqualTo(SumOfSquaredDifferences(xb, yb, ReductionVariant.PerThreadLoop, scale: 0.5f)), "SSD");
        Assert.That(Assert.Throws<ArgumentException>(() => Kernels.SumOfSquaredDifferences(xb.View, yb.View.SubView(0, 10), output.View))!.Message,
            Does.Contain("equal length"));
        Assert.That(Assert.Throws<ArgumentException>(() => Kernels.Sum(xb.View, yb.View))!.Message, Does.Contain("output of 1 element"));
    }

    [TestCase(1)]
    [TestCase(1000)]
    [TestCase(4099)]
    public void SumBackwardAddsTheScaledUpstreamGradientEverywhere(int n)
    {
        var prior = TestData.Uniform(n, 14);
        using var dx = Upload(prior);
        using var dloss = Upload([0.75f]);
        float scale = 1f / n;
        Kernels.SumBackward(dloss.View, dx.View, scale);
        var expected = prior.Select(p => p + (double)(scale * 0.75f)).ToArray();
        Check.Close(dx.ToArray(), expected, 1e-6, 1e-7, $"dx, n={n}");
    }

    [TestCase(1)]
    [TestCase(1000)]
    [TestCase(4099)]
    public void SquaredDifferenceBackwardAddsTwoScaledDifferences(int n)
    {
        var a = TestData.Uniform(n, 15);
        var b = TestData.Uniform(n, 16);
        var prior = TestData.Uniform(n, 17);
        using var ab = Upload(a);
        using var bb = Upload(b);
        using var dloss = Upload([1.5f]);
        using var da = Upload(prior);
        using var db = Upload(prior);
        float scale = 1f / n;
        Kernels.SumOfSquaredDifferencesBackward(ab.View, bb.View, dloss.View, da.View, scale);
        Kernels.SumOfSquaredDifferencesBackward(ab.View, bb.View, dloss.View, db.View, scale, withRespectToB: true);
        var ga = a.Select((v, i) => prior[i] + 2.0 * scale * (v - b[i]) * 1.5).ToArray();
        var gb = a.Select((v, i) => prior[i] - 2.0 * scale * (v - b[i]) * 1.5).ToArray();
        Check.Close(da.ToArray(), ga, 1e-5, 1e-6, $"d/da, n={n}");
        Check.Close(db.ToArray(), gb, 1e-5, 1e-6, $"d/db, n={n}");
    }

    // ---- the ops, through the tape ----

    [Test]
    public void MseLossValueAndGradientsOfBothInputs()
    {
        int[] shape = [2, 3, 5, 7];
        int n = 2 * 3 * 5 * 7;
        var pv = TestData.Uniform(n, 18, 2f);
        var tv = TestData.Uniform(n, 19);
        using var prediction = Tensor.FromArray(Device, pv, shape);
        using var target = Tensor.FromArray(Device, tv, shape);
        prediction.RequireGrad();
        target.RequireGrad();
        var tape = new Tape(Device);
        var loss = tape.MseLoss(prediction, target);
        Assert.That(loss.Shape, Is.EqualTo(new[] { 1 }));
        double[] pd = TestData.ToDouble(pv), td = TestData.ToDouble(tv);
        double Mse(double[] p, double[] t) => p.Select((v, i) => (v - t[i]) * (v - t[i])).Sum() / p.Length;
        Assert.That(loss.ToScalar(), Is.EqualTo(Mse(pd, td)).Within(1e-6 * Mse(pd, td)), "loss");
        tape.Backward(loss);
        Check.Close(prediction.Grad!.ToArray(), FiniteDifference.Gradient(p => Mse(p, td), pd), 1e-4, 1e-7, "dL/dprediction");
        Check.Close(target.Grad!.ToArray(), FiniteDifference.Gradient(t => Mse(pd, t), td), 1e-4, 1e-7, "dL/dtarget");
    }

    [Test]
    public void MseLossLeavesATargetThatNeedsNoGradientAlone()
    {
        using var prediction = Tensor.FromArray(Device, [1f, 2f, 3f, 4f], 4);
        using var target = Tensor.FromArray(Device, [0f, 0f, 1f, 5f], 4);
        prediction.RequireGrad();
        var tape = new Tape(Device);
        var loss = tape.MseLoss(prediction, target);
        Assert.That(loss.ToScalar(), Is.EqualTo((1 + 4 + 4 + 1) / 4f));
        tape.Backward(loss);
        Assert.That(prediction.Grad!.ToArray(), Is.EqualTo(new[] { 0.5f, 1f, 1f, -0.5f }), "2(p − t)/n");
        Assert.That(target.Grad, Is.Null);
    }

    [Test]
    public void MseLossRejectsMismatchedShapes()
    {
        using var a = Tensor.Zeros(Device, 2, 3);
        using var b = Tensor.Zeros(Device, 3, 2);
        var e = Assert.Throws<ArgumentException>(() => new Tape(Device).MseLoss(a, b))!;
        Assert.That(e.Message, Does.Contain("[2, 3]").And.Contain("[3, 2]"));
    }

    [Test]
    public void SumAndMeanValuesAndGradients()
    {
        var v = TestData.Uniform(210, 20, 3f);
        using var x = Tensor.FromArray(Device, v, 2, 105);
        x.RequireGrad();
        var tape = new Tape(Device);
        var sum = tape.Sum(x);
        Assert.That(sum.ToScalar(), Is.EqualTo(ReduceReference.Sum(v)).Within(1e-4), "sum");
        tape.Backward(sum);
        Assert.That(x.Grad!.ToArray(), Is.All.EqualTo(1f), "d sum / dx");

        x.Grad!.Clear();
        var mean = tape.Mean(x);
        Assert.That(mean.ToScalar(), Is.EqualTo(ReduceReference.Sum(v) / 210).Within(1e-6), "mean");
        tape.Backward(mean);
        Assert.That(x.Grad!.ToArray(), Is.All.EqualTo(1f / 210), "d mean / dx");
    }
}
