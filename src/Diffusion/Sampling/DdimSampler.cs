using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Diffusion;

namespace IlgpuDdpm.Diffusion;

/// <summary>
/// DDIM (Song et al. 2021, eq. 12) on an evenly strided subsequence of the timesteps:
/// x̂0 = clip?((x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t), ε' = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) (ε re-derived from the clipped x̂0, as the
/// improved-DDPM and diffusers samplers do; ε' = ε̂ without clipping),
/// x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε' + σ z, σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev).
/// Substituting ε' gives the reverse-step form A·x̂0 + B·x_t + σ z with B = dir/√(1−ᾱ_t), A = √ᾱ_prev − B·√ᾱ_t.
/// </summary>
public sealed class DdimSampler(int steps, double eta, bool clip) : ISampler
{
    /// <summary>Steps when none are asked for (capped at T).</summary>
    public const int DefaultSteps = 50;

    /// <inheritdoc/>
    public int[] Timesteps(NoiseSchedule schedule)
    {
        int T = schedule.Timesteps;
        int count = steps == 0 ? Math.Min(DefaultSteps, T) : steps;
        if (count < 1 || count > T) throw new ArgumentException($"{count} steps: DDIM steps must be between 1 and the model's T = {T}");
        if (!(eta >= 0) || double.IsInfinity(eta)) throw new ArgumentException($"DDIM eta must be finite and ≥ 0, got {eta}");
        // Evenly spaced, always ending at t = 0 (index 0): t_k = round(k·(T−1)/(S−1)) for k = S−1..0.
        var result = new int[count];
        for (int k = 0; k < count; k++)
            result[count - 1 - k] = count == 1 ? T - 1 : (int)Math.Round(k * (T - 1.0) / (count - 1));
        return result.Distinct().ToArray();
    }

    /// <inheritdoc/>
    public ReverseStepCoefficients Step(NoiseSchedule schedule, int t, int tPrev)
    {
        double alphaBar = schedule.AlphasBar[t];
        double alphaBarPrev = tPrev >= 0 ? schedule.AlphasBar[tPrev] : 1.0;
        double sigma = eta * Math.Sqrt((1 - alphaBarPrev) / (1 - alphaBar)) * Math.Sqrt(Math.Max(0, 1 - alphaBar / alphaBarPrev));
        double direction = Math.Sqrt(Math.Max(0, 1 - alphaBarPrev - sigma * sigma));
        double b = direction / Math.Sqrt(1 - alphaBar);
        return new ReverseStepCoefficients(1 / Math.Sqrt(alphaBar), Math.Sqrt(1 - alphaBar) / Math.Sqrt(alphaBar),
                                           Math.Sqrt(alphaBarPrev) - b * Math.Sqrt(alphaBar), b, sigma, clip);
    }

    /// <inheritdoc/>
    public string Describe(NoiseSchedule schedule) => $"ddim, {Timesteps(schedule).Length} steps, η = {eta}{(clip ? "" : ", no clipping")}";
}
