using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Random;
using NUnit.Framework;
using R = IlgpuDdpm.Tests.Kernels.DiffusionKernelReference;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class DiffusionKernelTests
{
    private static ComputeDevice Device => TestDevice.Cpu;
    private static DiffusionKernels K => Device.Kernels<DiffusionKernels>();

    /// <summary>The DDPM schedule: β linear 1e-4 … 0.02, T = 1000, in double.</summary>
    private static readonly double[] Betas = R.LinearBetas();

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    private static DeviceBuffer<int> Upload(int[] data)
    {
        var b = Device.Pool.Rent<int>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    private static float[] ToFloat(double[] a) => Array.ConvertAll(a, v => (float)v);

    // ------------------------------------------------------------------ noising

    private static (float[] Eps, float[] Xt) NoiseOnDevice(float[] x0, int[] t, PhiloxKey key, int n, int d)
    {
        var alphaBar = R.AlphaBars(Betas);
        using var sab = Upload(ToFloat(alphaBar.Select(Math.Sqrt).ToArray()));
        using var somab = Upload(ToFloat(alphaBar.Select(a => Math.Sqrt(1 - a)).ToArray()));
        using var dx0 = Upload(x0);
        using var dt = Upload(t);
        using var eps = Device.Pool.Rent<float>(n * d);
        using var xt = Device.Pool.Rent<float>(n * d);
        K.Noise(dx0.View, dt.View, sab.View, somab.View, key, eps.View, xt.View, n, d);
        return (eps.ToArray(), xt.ToArray());
    }

    [TestCase(1, 1, 0UL)]
    [TestCase(3, 17, 3UL)]
    [TestCase(4, 5, 1UL)]
    [TestCase(5, 784, 6UL)]
    public void NoisingMatchesTheReferenceWithTheHostsPhiloxNoise(int n, int d, ulong offset)
    {
        var x0 = TestData.Uniform(n * d, 11);
        var rng = new System.Random(n * 31 + d);
        var t = Enumerable.Range(0, n).Select(s => s == 0 ? 999 : rng.Next(1000)).ToArray();
        var key = new PhiloxKey(77, 3, offset);
        var (eps, xt) = NoiseOnDevice(x0, t, key, n, d);
        var (epsRef, xtRef) = R.Noise(x0, t, Betas, key, n, d);
        Check.Close(eps, epsRef, 1e-6, 1e-6, "eps = Philox normals");
        Check.Close(xt, xtRef, 1e-5, 1e-6, "x_t");
        var (eps2, xt2) = NoiseOnDevice(x0, t, key, n, d);
        Check.BitIdentical(eps2, eps, "eps rerun");
        Check.BitIdentical(xt2, xt, "x_t rerun");
    }

    [Test]
    public void NoisingUsesEachSamplesOwnTimestep()
    {
        // Sample 0 at t = 0 is almost x0; sample 1 at t = 999 is almost pure noise.
        const int d = 64;
        var x0 = Enumerable.Repeat(0.5f, 2 * d).ToArray();
        var (eps, xt) = NoiseOnDevice(x0, [0, 999], new PhiloxKey(1, 1, 0), 2, d);
        for (int e = 0; e < d; e++)
        {
            Assert.That(xt[e], Is.EqualTo(0.5f).Within(0.05f), "t = 0 keeps x0");
            Assert.That(xt[d + e], Is.EqualTo(eps[d + e]).Within(0.02f), "t = 999 is noise");
        }
    }

    [Test]
    public void NoisingRejectsBadShapes()
    {
        using var x = Device.Pool.Rent<float>(12);
        using var t = Device.Pool.Rent<int>(3);
        using var table = Device.Pool.Rent<float>(10);
        using var shortTable = Device.Pool.Rent<float>(9);
        var key = new PhiloxKey(1, 1, 0);
        Assert.That(() => K.Noise(x.View, t.View, table.View, table.View, key, x.View, x.View, 3, 5), Throws.ArgumentException);
        Assert.That(() => K.Noise(x.View, t.View, table.View, table.View, key, x.View, x.View, 4, 3), Throws.ArgumentException);
        Assert.That(() => K.Noise(x.View, t.View, table.View, shortTable.View, key, x.View, x.View, 3, 4), Throws.ArgumentException);
    }

    // ------------------------------------------------------------------ the reverse step (DDPM and DDIM coefficients)

    /// <summary>The same schedule as <see cref="Betas"/>, as the samplers see it.</summary>
    private static readonly NoiseSchedule Schedule = NoiseSchedule.Linear(1000);

    private static ReverseStepCoefficients Ddpm(int t, bool fixedLarge, bool clip) =>
        new DdpmSampler(fixedLarge ? VarianceKind.Large : VarianceKind.Small, clip).Step(Schedule, t, t - 1);

    private static ReverseStepCoefficients Ddim(int t, int tPrev, double eta, bool clip) =>
        new DdimSampler(0, eta, clip).Step(Schedule, t, tPrev);

    private static float[] StepOnDevice(float[] xt, float[] eps, ReverseStepCoefficients c, PhiloxKey key)
    {
        using var dxt = Upload(xt);
        using var deps = Upload(eps);
        using var output = Device.Pool.Rent<float>(xt.Length);
        K.ReverseStep(dxt.View, deps.View, c, key, output.View);
        return output.ToArray();
    }

    private static float[] MeanOnDevice(float[] xt, float[] eps, ReverseStepCoefficients c) => StepOnDevice(xt, eps, c.WithoutNoise(), default);

    [TestCase(7, 1, true, 0UL)]
    [TestCase(7, 0, true, 0UL)]
    [TestCase(1001, 10, false, 5UL)]
    [TestCase(4099, 500, true, 2UL)]
    [TestCase(300, 999, false, 0UL)]
    public void DdpmStepMatchesTheReference(int n, int t, bool fixedLarge, ulong offset)
    {
        var xt = TestData.Uniform(n, 21, 2f);
        var eps = TestData.Uniform(n, 22, 2f);
        var key = new PhiloxKey(5, 9, offset);
        foreach (bool clip in new[] { false, true })
        {
            var c = Ddpm(t, fixedLarge, clip);
            var got = StepOnDevice(xt, eps, c, key);
            Check.Close(got, R.PosteriorStep(xt, eps, Betas, t, fixedLarge, clip, key), 1e-5, 2e-5, $"x_(t-1), clip {clip}");
            Check.BitIdentical(StepOnDevice(xt, eps, c, key), got, "rerun");
        }
    }

    [TestCase(1)]
    [TestCase(100)]
    [TestCase(999)]
    public void EpsilonAndX0FormsOfTheMeanAgreeWhenNotClipping(int t)
    {
        // x_t built from an x0 inside [−1, 1] and the true ε: the predicted x̂0 is x0, so clipping does nothing.
        const int n = 515;
        var x0 = TestData.Uniform(n, 31, 0.9f);
        var eps = TestData.Uniform(n, 32, 2f);
        double a = R.AlphaBar(Betas, t);
        var xt = new float[n];
        for (int i = 0; i < n; i++) xt[i] = (float)(Math.Sqrt(a) * x0[i] + Math.Sqrt(1 - a) * eps[i]);

        var epsForm = R.MeanFromEps(xt, eps, Betas, t);
        var x0Form = R.MeanFromX0(R.PredictX0(xt, eps, a, clip: false), xt, Betas, t);
        double worst = epsForm.Zip(x0Form, (u, v) => Math.Abs(u - v)).Max();
        Assert.That(worst, Is.LessThan(1e-9), "reference: ε form vs x0 form");

        Check.Close(MeanOnDevice(xt, eps, Ddpm(t, true, clip: false)), epsForm, 1e-5, 1e-5, "kernel, no clipping");
        Check.Close(MeanOnDevice(xt, eps, Ddpm(t, true, clip: true)), epsForm, 1e-5, 1e-5, "kernel, clipping not active");
    }

    [Test]
    public void NoNoiseIsAddedAtTheLastStep()
    {
        const int n = 333;
        var xt = TestData.Uniform(n, 41, 2f);
        var eps = TestData.Uniform(n, 42, 2f);
        foreach (bool fixedLarge in new[] { true, false })
        {
            var c = Ddpm(0, fixedLarge, clip: true);
            Assert.That(c.Sigma, Is.EqualTo(0f), "σ at t = 0");
            var variance = fixedLarge ? VarianceKind.Large : VarianceKind.Small;
            Assert.That(double.IsFinite(DdpmSampler.LogVariance(Schedule, variance, 0)) && double.IsFinite(Schedule.PosteriorLogVariancesClipped[0]),
                        "the VLB log-variances stay finite at t = 0");
            var a = StepOnDevice(xt, eps, c, new PhiloxKey(1, 1, 0));
            var b = StepOnDevice(xt, eps, c, new PhiloxKey(2, 7, 123));
            Check.BitIdentical(a, b, "two keys at t = 0");
            Check.BitIdentical(a, MeanOnDevice(xt, eps, c), "step = mean at t = 0");
        }
        // …while at t = 1 the noise is there: the step differs from the mean by σ z.
        var c1 = Ddpm(1, true, clip: false);
        var key = new PhiloxKey(3, 3, 0);
        var step = StepOnDevice(xt, eps, c1, key);
        var mean = MeanOnDevice(xt, eps, c1);
        var z = R.Normals(key, n);
        for (int i = 0; i < n; i++) Assert.That(step[i] - mean[i], Is.EqualTo(Math.Sqrt(Betas[1]) * z[i]).Within(1e-5), $"σ z at {i}");
    }

    [Test]
    public void DdpmCoefficientsFollowTheSchedule()
    {
        int t = 37;
        double beta = Betas[t], a = R.AlphaBar(Betas, t), ap = R.AlphaBar(Betas, t - 1);
        var c = Ddpm(t, fixedLarge: false, clip: true);
        Assert.That(c.P, Is.EqualTo((float)Math.Sqrt(1 / a)).Within(1).Ulps);
        Assert.That(c.Q, Is.EqualTo((float)Math.Sqrt(1 / a - 1)).Within(1).Ulps);
        Assert.That(c.A, Is.EqualTo((float)(Math.Sqrt(ap) * beta / (1 - a))).Within(1).Ulps);
        Assert.That(c.B, Is.EqualTo((float)(Math.Sqrt(1 - beta) * (1 - ap) / (1 - a))).Within(1).Ulps);
        double tilde = beta * (1 - ap) / (1 - a);
        Assert.That(c.Sigma, Is.EqualTo((float)Math.Sqrt(tilde)).Within(1).Ulps);
        Assert.That(DdpmSampler.LogVariance(Schedule, VarianceKind.Small, t), Is.EqualTo(Math.Log(tilde)).Within(1e-9));
        Assert.That(Schedule.PosteriorLogVariancesClipped[t], Is.EqualTo(Math.Log(tilde)).Within(1e-9));
        Assert.That(c.Clip);
        var large = Ddpm(t, fixedLarge: true, clip: false);
        Assert.That(large.Sigma, Is.EqualTo((float)Math.Sqrt(beta)).Within(1).Ulps);
        Assert.That(DdpmSampler.LogVariance(Schedule, VarianceKind.Large, t), Is.EqualTo(Math.Log(beta)).Within(1e-9));
        Assert.That(large.Clip, Is.False);
        // t = 0: the seed's code uses β̃ of index 1 as the variance (only its log matters: no noise).
        double tilde1 = Betas[1] * (1 - R.AlphaBar(Betas, 0)) / (1 - R.AlphaBar(Betas, 1));
        Assert.That(DdpmSampler.LogVariance(Schedule, VarianceKind.Large, 0), Is.EqualTo(Math.Log(tilde1)).Within(1e-9));
        Assert.That(() => new ReverseStepCoefficients(double.NaN, 1, 1, 1, 0, false), Throws.ArgumentException);
        Assert.That(() => new ReverseStepCoefficients(1, 1, 1, 1, -0.5, false), Throws.ArgumentException);
    }

    [TestCase(7, 0)]
    [TestCase(1000, 1)]
    [TestCase(2049, 500)]
    public void PosteriorMeanFromX0MatchesTheReference(int n, int t)
    {
        // μ̃(x_t, x_0) = coef_x0·x_0 + coef_xt·x_t: the element-wise weighted sum the bound uses.
        var x0 = TestData.Uniform(n, 51);
        var xt = TestData.Uniform(n, 52, 2f);
        using var dx0 = Upload(x0);
        using var dxt = Upload(xt);
        using var mean = Device.Pool.Rent<float>(n);
        var op = new WeightedSumOp((float)Schedule.PosteriorMeanCoefX0[t], (float)Schedule.PosteriorMeanCoefXt[t]);
        Device.Kernels<ElementwiseKernels>().Binary(op, dx0.View, dxt.View, mean.View);
        Check.Close(mean.ToArray(), R.MeanFromX0(TestData.ToDouble(x0), xt, Betas, t), 1e-5, 1e-6, "μ̃(x_t, x_0)");
    }

    [Test]
    public void ReverseStepRejectsMismatchedLengths()
    {
        using var a = Device.Pool.Rent<float>(10);
        using var b = Device.Pool.Rent<float>(9);
        var c = Ddpm(5, true, false);
        Assert.That(() => K.ReverseStep(a.View, b.View, c, default, a.View), Throws.ArgumentException);
        Assert.That(() => K.ReverseStep(a.View, a.View, c, default, b.View), Throws.ArgumentException);
    }

    [TestCase(9, 999, 979, 0.0)]
    [TestCase(1000, 500, 480, 0.0)]
    [TestCase(1000, 19, -1, 0.0)]
    [TestCase(513, 999, 949, 1.0)]
    [TestCase(2051, 300, 250, 0.5)]
    public void DdimStepMatchesTheReference(int n, int t, int tPrev, double eta)
    {
        var xt = TestData.Uniform(n, 61, 2f);
        var eps = TestData.Uniform(n, 62, 2f);
        var key = new PhiloxKey(8, 2, 3);
        foreach (bool clip in new[] { false, true })
        {
            var c = Ddim(t, tPrev, eta, clip);
            var got = StepOnDevice(xt, eps, c, key);
            Check.Close(got, R.Ddim(xt, eps, Betas, t, tPrev, eta, clip, key), 1e-5, 3e-5, $"DDIM x_prev, clip {clip}");
            Check.BitIdentical(StepOnDevice(xt, eps, c, key), got, "rerun");
            if (eta == 0)
                Check.BitIdentical(StepOnDevice(xt, eps, c, new PhiloxKey(99, 99, 99)), got, "η = 0 does not depend on the key");
        }
    }

    [Test]
    public void DdimToTheEndReturnsThePredictedX0()
    {
        const int n = 100;
        var xt = TestData.Uniform(n, 71, 2f);
        var eps = TestData.Uniform(n, 72, 2f);
        var got = StepOnDevice(xt, eps, Ddim(9, -1, 0, clip: false), default);
        Check.Close(got, R.PredictX0(xt, eps, R.AlphaBar(Betas, 9), clip: false), 1e-5, 1e-5, "x̂0");
    }

    [TestCase(1)]
    [TestCase(10)]
    [TestCase(700)]
    public void DdimWithEtaOneOnConsecutiveStepsIsTheDdpmStepWithFixedSmallVariance(int t)
    {
        // σ² = (1−ᾱ_{t−1})/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_{t−1}) = β̃_t and the means coincide (Song et al. 2021, §4.1).
        const int n = 257;
        var xt = TestData.Uniform(n, 81, 2f);
        var eps = TestData.Uniform(n, 82, 2f);
        var key = new PhiloxKey(4, 4, 4);
        var ddim = StepOnDevice(xt, eps, Ddim(t, t - 1, 1.0, clip: false), key);
        var ddpm = StepOnDevice(xt, eps, Ddpm(t, fixedLarge: false, clip: false), key);
        Check.Close(ddim, ToFloat(TestData.ToDouble(ddpm)), 1e-4, 1e-4, "DDIM(η=1) vs DDPM(β̃)");
    }

    [Test]
    public void SamplersStateTheirStepCountRuleOnce()
    {
        Assert.That(new DdpmSampler(VarianceKind.Large, true).Timesteps(Schedule), Is.EqualTo(Enumerable.Range(0, 1000).Reverse()));
        Assert.That(new DdpmSampler(VarianceKind.Large, true, 1000).Timesteps(Schedule), Has.Length.EqualTo(1000));
        Assert.That(() => new DdpmSampler(VarianceKind.Large, true, 50).Timesteps(Schedule), Throws.ArgumentException.With.Message.Contains("ddim"));
        var ddim = new DdimSampler(0, 0, true).Timesteps(Schedule);
        Assert.That(ddim, Has.Length.EqualTo(DdimSampler.DefaultSteps));
        Assert.That(ddim[0], Is.EqualTo(999));
        Assert.That(ddim[^1], Is.EqualTo(0));
        Assert.That(ddim.Zip(ddim.Skip(1), (u, v) => u > v).All(x => x), "strictly decreasing");
        Assert.That(new DdimSampler(1, 0, true).Timesteps(Schedule), Is.EqualTo(new[] { 999 }));
        Assert.That(() => new DdimSampler(1001, 0, true).Timesteps(Schedule), Throws.ArgumentException);
        Assert.That(() => new DdimSampler(-1, 0, true).Timesteps(Schedule), Throws.ArgumentException);
        Assert.That(() => new DdimSampler(10, -1, true).Timesteps(Schedule), Throws.ArgumentException);
    }

    // ------------------------------------------------------------------ variational bound terms

    private static float[] KlOnDevice(float[] m1, float lv1, float[] m2, float lv2, int n, int d, float scale = 1f, float[]? initial = null)
    {
        using var a = Upload(m1);
        using var b = Upload(m2);
        using var output = Upload(initial ?? new float[n]);
        K.GaussianKL(a.View, lv1, b.View, lv2, output.View, n, d, scale, accumulate: initial is not null);
        return output.ToArray();
    }

    [TestCase(1, 1)]
    [TestCase(3, 17)]
    [TestCase(2, 600)]  // 3 stage-1 chunks per sample, ragged
    [TestCase(4, 784)]
    public void GaussianKLMatchesTheReference(int n, int d)
    {
        var m1 = TestData.Uniform(n * d, 91);
        var m2 = TestData.Uniform(n * d, 92);
        const float lv1 = -3.1f, lv2 = -2.7f;
        var got = KlOnDevice(m1, lv1, m2, lv2, n, d);
        var expected = R.GaussianKL(TestData.ToDouble(m1), lv1, TestData.ToDouble(m2), lv2, n, d);
        Check.Close(got, expected, 1e-5, 1e-6, "Σ_d KL");
        Check.BitIdentical(KlOnDevice(m1, lv1, m2, lv2, n, d), got, "rerun");
        // scale and accumulate: output = initial + scale·KL.
        var initial = TestData.Uniform(n, 93);
        var acc = KlOnDevice(m1, lv1, m2, lv2, n, d, 0.25f, initial);
        Check.Close(acc, expected.Select((v, s) => initial[s] + 0.25 * v).ToArray(), 1e-5, 1e-6, "accumulated, scaled");
    }

    [Test]
    public void KLOfEqualGaussiansIsZero()
    {
        const int n = 3, d = 700;
        var m = TestData.Uniform(n * d, 94, 3f);
        Assert.That(KlOnDevice(m, -1.3f, m, -1.3f, n, d), Is.All.EqualTo(0f));
        // …and positive as soon as they differ.
        Assert.That(KlOnDevice(m, -1.3f, m, -1.2f, n, d), Is.All.GreaterThan(0f));
    }

    [TestCase(2, 10)]
    [TestCase(3, 784)]
    public void PriorKLMatchesTheReference(int n, int d)
    {
        var x0 = TestData.Uniform(n * d, 95);
        double aT = R.AlphaBar(Betas, 999);
        using var dx0 = Upload(x0);
        using var output = Device.Pool.Rent<float>(n);
        K.PriorKL(dx0.View, aT, output.View, n, d);
        var mean1 = x0.Select(x => Math.Sqrt(aT) * x).ToArray();
        var expected = R.GaussianKL(mean1, Math.Log(1 - aT), new double[n * d], 0, n, d);
        Check.Close(output.ToArray(), expected, 1e-4, 1e-9, "L_T");
        Assert.That(expected.Max() / d, Is.LessThan(1e-5), "the prior term of the linear schedule is tiny per dimension (sanity of the reference)");
        Assert.That(expected.Min(), Is.GreaterThan(0), "and positive");
    }

    private static float[] NllOnDevice(float[] x0, float[] means, float logVariance, int n, int d)
    {
        using var a = Upload(x0);
        using var b = Upload(means);
        using var output = Device.Pool.Rent<float>(n);
        K.DiscretizedGaussianNll(a.View, b.View, logVariance, output.View, n, d);
        return output.ToArray();
    }

    [TestCase(1, 1, -9.8)]  // log β̃ of index 1 of the linear schedule ≈ −9.8: σ ≈ 0.0074
    [TestCase(3, 17, -6.0)]
    [TestCase(2, 600, -9.8)]
    [TestCase(4, 784, -2.0)]
    public void DiscretizedGaussianNllMatchesTheReference(int n, int d, double logVariance)
    {
        var rng = new System.Random(n * 1000 + d);
        var x0 = new float[n * d];
        var means = new float[n * d];
        for (int i = 0; i < x0.Length; i++)
        {
            // Every level, the edge bins included, with means near the data (as a trained decoder's).
            x0[i] = R.Level(i % 3 == 0 ? (i % 2) * 255 : rng.Next(256));
            means[i] = x0[i] + (float)((rng.NextDouble() - 0.5) * 0.05);
        }
        var got = NllOnDevice(x0, means, (float)logVariance, n, d);
        Check.Close(got, R.DiscretizedNll(x0, means, (float)logVariance, n, d), 2e-4, 1e-4, "−Σ log p(x0 | x1)");
        Check.BitIdentical(NllOnDevice(x0, means, (float)logVariance, n, d), got, "rerun");
    }

    [TestCase(0.0, 0.1)]
    [TestCase(0.3, 0.005)]
    [TestCase(-0.99, 0.02)]
    [TestCase(1.2, 0.5)]
    [TestCase(0.0, 3.0)]
    public void DecoderBinProbabilitiesSumToOne(double mean, double std)
    {
        // One "sample" per level, d = 1: exp(−NLL) is that bin's probability.
        var x0 = Enumerable.Range(0, 256).Select(R.Level).ToArray();
        var means = Enumerable.Repeat((float)mean, 256).ToArray();
        float logVariance = (float)(2 * Math.Log(std));
        var nll = NllOnDevice(x0, means, logVariance, 256, 1);
        double total = nll.Sum(v => Math.Exp(-(double)v));
        Assert.That(total, Is.EqualTo(1.0).Within(1e-4), $"Σ bins, mean {mean}, σ {std}");
        Assert.That(nll, Is.All.GreaterThanOrEqualTo(0f), "probabilities ≤ 1");
    }

    [Test]
    public void VlbTermsRejectBadShapes()
    {
        using var a = Device.Pool.Rent<float>(12);
        using var b = Device.Pool.Rent<float>(11);
        using var o = Device.Pool.Rent<float>(3);
        Assert.That(() => K.GaussianKL(a.View, 0, b.View, 0, o.View, 3, 4), Throws.ArgumentException);
        Assert.That(() => K.GaussianKL(a.View, 0, a.View, 0, o.View, 4, 3), Throws.ArgumentException);
        Assert.That(() => K.GaussianKL(a.View, float.NegativeInfinity, a.View, 0, o.View, 3, 4), Throws.ArgumentException);
        Assert.That(() => K.DiscretizedGaussianNll(a.View, b.View, 0, o.View, 3, 4), Throws.ArgumentException);
        Assert.That(() => K.PriorKL(a.View, 1.0, o.View, 3, 4), Throws.ArgumentException);
    }
}
