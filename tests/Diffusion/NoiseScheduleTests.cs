using IlgpuDdpm.Diffusion.Schedules;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Diffusion;

[TestFixture]
public sealed class NoiseScheduleTests
{
    [Test]
    public void LinearTablesMatchTheDirectFormulas()
    {
        var s = NoiseSchedule.Linear();
        Assert.That(s.Timesteps, Is.EqualTo(1000));
        Assert.That(s.Betas[0], Is.EqualTo(1e-4).Within(1e-15));
        Assert.That(s.Betas[999], Is.EqualTo(0.02).Within(1e-15));
        Assert.That(s.Betas[500], Is.EqualTo(1e-4 + (0.02 - 1e-4) * 500 / 999).Within(1e-15));
        foreach (int i in new[] { 0, 1, 10, 500, 999 })
        {
            double alphaBar = 1;
            for (int j = 0; j <= i; j++) alphaBar *= 1 - s.Betas[j];
            double prev = alphaBar / (1 - s.Betas[i]);
            Assert.That(s.AlphasBar[i], Is.EqualTo(alphaBar).Within(1e-12), $"ᾱ at {i}");
            Assert.That(s.AlphasBarPrev[i], Is.EqualTo(i == 0 ? 1 : prev).Within(1e-12), $"ᾱ_prev at {i}");
            Assert.That(s.SqrtAlphasBar[i], Is.EqualTo(Math.Sqrt(alphaBar)).Within(1e-12));
            Assert.That(s.SqrtOneMinusAlphasBar[i], Is.EqualTo(Math.Sqrt(1 - alphaBar)).Within(1e-12));
            Assert.That(s.RecipSqrtAlphas[i], Is.EqualTo(1 / Math.Sqrt(1 - s.Betas[i])).Within(1e-12));
            Assert.That(s.EpsCoefficients[i], Is.EqualTo(s.Betas[i] / Math.Sqrt(1 - alphaBar)).Within(1e-12));
            // β̃_t via the seed's other form: 1 / (α_t/β_t + 1/(1 − ᾱ_{t−1})), for t ≥ 2.
            if (i > 0)
                Assert.That(s.PosteriorVariances[i], Is.EqualTo(1 / ((1 - s.Betas[i]) / s.Betas[i] + 1 / (1 - prev))).Within(1e-12), $"β̃ at {i}");
        }
        Assert.That(s.PosteriorVariances[0], Is.EqualTo(0), "β̃_1 = 0 since ᾱ_0 = 1");
        Assert.That(s.LargeVariances[0], Is.EqualTo(s.PosteriorVariances[1]), "the seed's first-step variance");
        Assert.That(s.LargeVariances[5], Is.EqualTo(s.Betas[5]));
    }

    [Test]
    public void EpsilonFormAndX0FormPosteriorMeansAgree()
    {
        // μ̃ = coef_x0 x0 + coef_xt xt  must equal  (xt − β/√(1−ᾱ) ε)/√α  when xt = √ᾱ x0 + √(1−ᾱ) ε (seed derivation).
        var s = NoiseSchedule.Linear();
        var rng = new System.Random(3);
        foreach (int i in new[] { 1, 7, 300, 999 })
        {
            double x0 = rng.NextDouble() * 2 - 1, eps = rng.NextDouble() * 2 - 1;
            double xt = s.SqrtAlphasBar[i] * x0 + s.SqrtOneMinusAlphasBar[i] * eps;
            double viaX0 = s.PosteriorMeanCoefX0[i] * x0 + s.PosteriorMeanCoefXt[i] * xt;
            double viaEps = s.RecipSqrtAlphas[i] * (xt - s.EpsCoefficients[i] * eps);
            Assert.That(viaEps, Is.EqualTo(viaX0).Within(1e-10), $"t index {i}");
            double x0Back = s.SqrtRecipAlphasBar[i] * xt - s.SqrtRecipAlphasBarMinusOne[i] * eps;
            Assert.That(x0Back, Is.EqualTo(x0).Within(1e-9), "x0 recovered from xt and ε");
        }
    }

    [Test]
    public void CosineScheduleFollowsNicholAndDhariwal()
    {
        var s = NoiseSchedule.Cosine(1000);
        static double F(double t) { double c = Math.Cos((t / 1000 + 0.008) / 1.008 * Math.PI / 2); return c * c; }
        Assert.That(s.AlphasBar[499], Is.EqualTo(F(500) / F(0)).Within(1e-9));
        Assert.That(s.Betas.Max(), Is.LessThanOrEqualTo(0.999));
        Assert.That(s.Betas[999], Is.EqualTo(0.999), "the last β is clipped");
        for (int i = 1; i < 1000; i++) Assert.That(s.AlphasBar[i], Is.LessThan(s.AlphasBar[i - 1]));
    }

    [Test]
    public void BadSchedulesAreRefused()
    {
        Assert.That(() => NoiseSchedule.Linear(1), Throws.ArgumentException.With.Message.Contains("at least 2"));
        Assert.That(() => NoiseSchedule.Linear(100, 0.5, 0.1), Throws.ArgumentException.With.Message.Contains("β_start"));
        Assert.That(() => NoiseSchedule.Linear(100, 1e-4, 1.5), Throws.ArgumentException);
    }
}
