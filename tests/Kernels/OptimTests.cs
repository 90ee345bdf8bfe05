using ILGPU;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Kernels.Reduce;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class OptimTests
{
    // Barrier variants are tested here: keep them off the suite-wide device (see TestDevice.Grouped).
    private static ComputeDevice Device => TestDevice.Grouped;
    private static OptimKernels K => Device.Kernels<OptimKernels>();

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    // ------------------------------------------------------------------ Adam

    [TestCase(1, 0f)]
    [TestCase(7, 0f)]
    [TestCase(1000, 0.01f)]
    [TestCase(4099, 0.1f)]
    public void AdamMatchesTheReferenceOverSeveralSteps(int n, float weightDecay)
    {
        var settings = new AdamSettings { Beta1 = 0.85f, Beta2 = 0.995f, Epsilon = 1e-6f, WeightDecay = weightDecay };
        var p0 = TestData.Uniform(n, 1);
        var pRef = TestData.ToDouble(p0);
        var mRef = new double[n];
        var vRef = new double[n];
        using var p = Upload(p0);
        using var g = Device.Pool.Rent<float>(n);
        using var m = Device.Pool.RentZeroed<float>(n);
        using var v = Device.Pool.RentZeroed<float>(n);
        for (int step = 1; step <= 6; step++)
        {
            double lr = 2e-3 * step / 6; // a warm-up, so the per-step learning rate is exercised
            var grad = TestData.Uniform(n, 100 + step, scale: 0.5f * step);
            g.CopyFrom(grad);
            K.Adam(p.View, g.View, m.View, v.View, settings.ForStep(step, lr));
            OptimReference.Adam(pRef, TestData.ToDouble(grad), mRef, vRef, step, lr, settings.Beta1, settings.Beta2, settings.Epsilon, weightDecay);
        }
        Check.Close(m.ToArray(), mRef, 1e-5, 1e-7, "first moment");
        Check.Close(v.ToArray(), vRef, 1e-5, 1e-8, "second moment");
        Check.Close(p.ToArray(), pRef, 1e-5, 1e-6, "parameters");
        // The update moved the parameters by about 6 learning rates: the comparison is not vacuous.
        Assert.That(Math.Abs(pRef[0] - p0[0]), Is.GreaterThan(1e-3));
    }

    [Test]
    public void DefaultSettingsAreThePapersAndBiasCorrectionIsComputedInDouble()
    {
        var s = new AdamSettings();
        Assert.That((s.Beta1, s.Beta2, s.Epsilon, s.WeightDecay), Is.EqualTo((0.9f, 0.999f, 1e-8f, 0f)));
        var step1 = s.ForStep(1, 1e-3);
        Assert.That(step1.InvBiasCorrection1, Is.EqualTo((float)(1 / (1 - (double)0.9f))));
        Assert.That(step1.InvBiasCorrection2, Is.EqualTo((float)(1 / (1 - (double)0.999f))));
        var late = s.ForStep(100000, 1e-3);
        Assert.That(late.InvBiasCorrection1, Is.EqualTo(1f));
        Assert.That(() => s.ForStep(0, 1e-3), Throws.ArgumentException);
        Assert.That(() => (s with { Beta2 = 1f }).ForStep(1, 1e-3), Throws.ArgumentException);
        Assert.That(() => (s with { Epsilon = 0f }).ForStep(1, 1e-3), Throws.ArgumentException);
    }

    [TestCase(5)]
    [TestCase(1031)]
    [TestCase(3000)]
    public void AdamWithADeviceGradientScaleEqualsAdamOnTheScaledGradient(int n)
    {
        var settings = new AdamSettings();
        var p0 = TestData.Uniform(n, 3);
        var grad = TestData.Uniform(n, 4, 2f);
        const float scale = 0.37f;
        var pRef = TestData.ToDouble(p0);
        var mRef = new double[n];
        var vRef = new double[n];
        using var p = Upload(p0);
        using var g = Upload(grad);
        using var m = Device.Pool.RentZeroed<float>(n);
        using var v = Device.Pool.RentZeroed<float>(n);
        using var normAndScale = Upload([123f, scale]);
        for (int step = 1; step <= 3; step++)
        {
            K.Adam(p.View, g.View, m.View, v.View, settings.ForStep(step, 1e-2), normAndScale.View, 1);
            OptimReference.Adam(pRef, Array.ConvertAll(grad, x => (double)x * scale), mRef, vRef, step, 1e-2, settings.Beta1, settings.Beta2, settings.Epsilon, 0);
        }
        Check.Close(p.ToArray(), pRef, 1e-5, 1e-6, "parameters");
        Check.Close(m.ToArray(), mRef, 1e-5, 1e-7, "first moment (of the scaled gradient)");
        Check.BitIdentical(g.ToArray(), grad, "the gradient buffer is left unscaled");
    }

    [Test]
    public void AdamRejectsMismatchedLengths()
    {
        using var a = Device.Pool.Rent<float>(10);
        using var b = Device.Pool.Rent<float>(11);
        var step = new AdamSettings().ForStep(1, 1e-3);
        Assert.That(() => K.Adam(a.View, b.View, a.View, a.View, step), Throws.ArgumentException);
        Assert.That(() => K.Adam(a.View, a.View, a.View, a.View, step, a.View, 10), Throws.ArgumentException);
    }

    // ------------------------------------------------------------------ global norm and clipping

    private static float SumOfSquaresOnDevice(float[] x, ReductionVariant variant)
    {
        using var buffer = Upload(x);
        using var partials = Device.Pool.Rent<float>(3);
        partials.CopyFrom([-1f, -1f, -1f]);
        K.SumOfSquares(buffer.View, partials.View, 1, variant);
        var result = partials.ToArray();
        Assert.That(result[0], Is.EqualTo(-1f), "slot 0 untouched");
        Assert.That(result[2], Is.EqualTo(-1f), "slot 2 untouched");
        return result[1];
    }

    [TestCase(1)]
    [TestCase(5)]
    [TestCase(1000)]
    [TestCase(70001)]
    [TestCase(300007)] // 74 segments: two stages
    public void SumOfSquaresPerThreadLoopMatchesTheReference(int n)
    {
        var x = TestData.Uniform(n, n);
        float got = SumOfSquaresOnDevice(x, ReductionVariant.PerThreadLoop);
        Check.Close([got], [OptimReference.SumOfSquares(x)], 1e-5, 0, "Σx²");
    }

    [TestCase(1)]
    [TestCase(300)]
    [TestCase(5000)]  // 2 segments, the second ragged
    public void SumOfSquaresGroupTreeMatchesTheReference(int n)
    {
        var x = TestData.Uniform(n, n + 1);
        float got = SumOfSquaresOnDevice(x, ReductionVariant.GroupTree);
        Check.Close([got], [OptimReference.SumOfSquares(x)], 1e-5, 0, "Σx²");
    }

    [Test]
    public void SumOfSquaresOfAnEmptyTensorIsZero()
    {
        using var buffer = Device.Pool.Rent<float>(4);
        using var partials = Device.Pool.Rent<float>(1);
        foreach (var variant in new[] { ReductionVariant.PerThreadLoop, ReductionVariant.GroupTree })
        {
            partials.CopyFrom([7f]);
            K.SumOfSquares(buffer.View.SubView(0, 0), partials.View, 0, variant);
            Assert.That(partials.ToArray()[0], Is.EqualTo(0f), variant.ToString());
        }
    }

    [TestCase(false, 100003)]
    [TestCase(true, 4099)]
    public void SumOfSquaresIsBitIdenticalAcrossRuns(bool grouped, int n)
    {
        var variant = grouped ? ReductionVariant.GroupTree : ReductionVariant.PerThreadLoop;
        // Values of very different magnitudes, so a different summation order would change the bits.
        var x = TestData.Uniform(n, 9);
        for (int i = 0; i < n; i += 7) x[i] *= 1000f;
        float a = SumOfSquaresOnDevice(x, variant);
        float b = SumOfSquaresOnDevice(x, variant);
        Check.BitIdentical([a], [b], "two runs");
    }

    private static readonly int[] GradientSizes = [10, 1000, 333, 1, 4097];

    // The global norm over several gradients (one SumOfSquares per tensor, then ClipScale) and the clip scale
    // min(1, max/(norm + 1e-6)) that Adam multiplies the gradient by (its scaled form is tested with Adam).
    [TestCase(1 / 3.0, TestName = "ClipScaleIsMaxOverNormWhenTheNormIsAboveMax")]
    [TestCase(2.0, TestName = "ClipScaleIsOneWhenTheNormIsBelowMax")]
    public void ClipScaleOverSeveralGradientsMatchesTheReference(double maxOverNorm)
    {
        var grads = GradientSizes.Select((n, k) => TestData.Uniform(n, 50 + k)).ToArray();
        var (norm, _) = OptimReference.ClipScale(grads, double.PositiveInfinity);
        double maxNorm = norm * maxOverNorm;
        var (_, scale) = OptimReference.ClipScale(grads, (float)maxNorm);
        var buffers = grads.Select(Upload).ToList();
        using var partials = Device.Pool.Rent<float>(GradientSizes.Length + 2); // longer than needed: only the first count are read
        using var normAndScale = Device.Pool.Rent<float>(2);
        for (int k = 0; k < buffers.Count; k++) K.SumOfSquares(buffers[k].View, partials.View, k);
        K.ClipScale(partials.View, buffers.Count, (float)maxNorm, normAndScale.View);
        var ns = normAndScale.ToArray();
        Check.Close(ns, [norm, scale], 1e-5, 0, "norm and scale");
        if (maxOverNorm > 1) Assert.That(ns[1], Is.EqualTo(1f), "a norm below the maximum is not scaled");
        for (int k = 0; k < grads.Length; k++)
        {
            Check.BitIdentical(buffers[k].ToArray(), grads[k], $"gradient {k} is only read");
            buffers[k].Dispose();
        }
    }

    [Test]
    public void ClipScaleStepByStepMatchesTheReference()
    {
        // The three public pieces used one by one, with the partials in slots out of order.
        var a = TestData.Uniform(123, 1, 3f);
        var b = TestData.Uniform(4567, 2, 0.1f);
        using var da = Upload(a);
        using var db = Upload(b);
        using var partials = Device.Pool.Rent<float>(2);
        using var normAndScale = Device.Pool.Rent<float>(2);
        K.SumOfSquares(db.View, partials.View, 0);
        K.SumOfSquares(da.View, partials.View, 1);
        K.ClipScale(partials.View, 2, 1f, normAndScale.View);
        var (norm, scale) = OptimReference.ClipScale([a, b], 1);
        Check.Close(normAndScale.ToArray(), [norm, scale], 1e-5, 0, "norm and scale");
    }

    [Test]
    public void ClippingRejectsBadArguments()
    {
        using var x = Device.Pool.Rent<float>(4);
        using var two = Device.Pool.Rent<float>(2);
        Assert.That(() => K.SumOfSquares(x.View, two.View, 2), Throws.ArgumentException);
        Assert.That(() => K.ClipScale(two.View, 3, 1f, two.View), Throws.ArgumentException);
        Assert.That(() => K.ClipScale(two.View, 2, 1f, x.View.SubView(0, 1)), Throws.ArgumentException);
        Assert.That(() => K.ClipScale(two.View, 2, 0f, two.View), Throws.ArgumentException);
    }

    // ------------------------------------------------------------------ EMA

    [TestCase(1, 0.9f)]
    [TestCase(17, 0.999f)]
    [TestCase(1001, 0.9999f)]
    public void EmaMatchesTheReference(int n, float decay)
    {
        var e0 = TestData.Uniform(n, 5);
        var eRef = TestData.ToDouble(e0);
        using var ema = Upload(e0);
        using var p = Device.Pool.Rent<float>(n);
        for (int step = 0; step < 4; step++)
        {
            var param = TestData.Uniform(n, 200 + step, 2f);
            p.CopyFrom(param);
            K.Ema(ema.View, p.View, decay);
            OptimReference.Ema(eRef, TestData.ToDouble(param), decay);
        }
        Check.Close(ema.ToArray(), eRef, 1e-6, 1e-7, "ema");
        Assert.That(() => K.Ema(ema.View, ema.View.SubView(0, n - 1 < 0 ? 0 : n - 1), decay), Throws.ArgumentException);
        Assert.That(() => K.Ema(ema.View, p.View, 1.5f), Throws.ArgumentException);
    }

    [Test]
    public void AdamAndEmaAreBitIdenticalAcrossRuns()
    {
        const int n = 5003;
        float[] Run()
        {
            using var p = Upload(TestData.Uniform(n, 1));
            using var g = Upload(TestData.Uniform(n, 2));
            using var m = Device.Pool.RentZeroed<float>(n);
            using var v = Device.Pool.RentZeroed<float>(n);
            using var e = Upload(TestData.Uniform(n, 3));
            var s = new AdamSettings { WeightDecay = 0.01f };
            for (int step = 1; step <= 3; step++)
            {
                K.Adam(p.View, g.View, m.View, v.View, s.ForStep(step, 1e-3));
                K.Ema(e.View, p.View, 0.99f);
            }
            return [.. p.ToArray(), .. e.ToArray()];
        }
        Check.BitIdentical(Run(), Run(), "two runs");
    }
}
