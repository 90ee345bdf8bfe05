using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Diffusion;

namespace IlgpuDdpm.Diffusion;

/// <summary>
/// Ancestral sampling, Algorithm 2 of Ho et al. (2020): every one of the T steps, x_{t−1} = μ̃_t(x_t, x̂0) + σ_t z
/// with x̂0 = clip?(√(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂) and the posterior mean of q(x_{t−1} | x_t, x_0):
/// μ̃ = √ᾱ_{t−1} β_t/(1−ᾱ_t) x̂0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t (seed: q_posterior; without clipping this equals
/// the ε form (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t). σ_t² = β_t (large; β̃ of index 1 at the first step, as the seed's
/// code does) or β̃_t (small); no noise at t = 0.
/// </summary>
public sealed class DdpmSampler(VarianceKind variance, bool clip, int steps = 0) : ISampler
{
    /// <inheritdoc/>
    public int[] Timesteps(NoiseSchedule schedule)
    {
        int T = schedule.Timesteps;
        if (steps != 0 && steps != T)
            throw new ArgumentException(steps > T
                ? $"{steps} steps exceed the model's T = {T}"
                : $"the ddpm sampler runs all T = {T} steps; use the ddim sampler for {steps}");
        return Enumerable.Range(0, T).Reverse().ToArray();
    }

    /// <inheritdoc/>
    public ReverseStepCoefficients Step(NoiseSchedule schedule, int t, int tPrev) =>
        Coefficients(schedule, t, clip, t > 0 ? Math.Sqrt(Variance(schedule, variance, t)) : 0);

    /// <inheritdoc/>
    public string Describe(NoiseSchedule schedule) => $"ddpm, {schedule.Timesteps} steps, variance {variance.ToString().ToLowerInvariant()}{(clip ? "" : ", no clipping")}";

    /// <summary>The step at <paramref name="t"/> with noise of standard deviation <paramref name="sigma"/> (0: the mean μ_θ only, as the bound uses it).</summary>
    public static ReverseStepCoefficients Coefficients(NoiseSchedule s, int t, bool clip, double sigma) =>
        new(s.SqrtRecipAlphasBar[t], s.SqrtRecipAlphasBarMinusOne[t], s.PosteriorMeanCoefX0[t], s.PosteriorMeanCoefXt[t], sigma, clip);

    /// <summary>σ_t² of p_θ(x_{t−1} | x_t): β_t (large, β̃ of index 1 at t = 0) or β̃_t (small).</summary>
    public static double Variance(NoiseSchedule s, VarianceKind variance, int t) =>
        variance == VarianceKind.Large ? s.LargeVariances[t] : s.PosteriorVariances[t];

    /// <summary>log σ_t² of p_θ for the bound: log β_t (large, log β̃ of index 1 at t = 0) or log β̃_t clipped (small).</summary>
    public static double LogVariance(NoiseSchedule s, VarianceKind variance, int t) =>
        variance == VarianceKind.Large ? Math.Log(s.LargeVariances[t]) : s.PosteriorLogVariancesClipped[t];
}
