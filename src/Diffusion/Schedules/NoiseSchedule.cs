using System.Text.Json.Serialization;

namespace IlgpuDdpm.Diffusion.Schedules;

/// <summary>Which β schedule.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ScheduleKind>))]
public enum ScheduleKind { Linear, Cosine }

/// <summary>What defines a schedule; stored in checkpoints' metadata.</summary>
public sealed record ScheduleSpec(ScheduleKind Kind = ScheduleKind.Linear, int Timesteps = 1000, double BetaStart = 1e-4, double BetaEnd = 0.02)
{
    /// <summary>The tables this spec defines.</summary>
    public NoiseSchedule Build() => Kind == ScheduleKind.Linear
        ? NoiseSchedule.Linear(Timesteps, BetaStart, BetaEnd)
        : NoiseSchedule.Cosine(Timesteps);
}

/// <summary>
/// A noise schedule and every table the forward process, the posterior and the samplers use, computed in
/// float64 on the host (DESIGN.md §2–3). Index i is the paper's step t = i + 1; "prev" tables at i = 0 use
/// ᾱ_0 = 1. Names follow the seed: α_t = 1 − β_t, ᾱ_t = Π_{s≤t} α_s.
/// </summary>
public sealed class NoiseSchedule
{
    private NoiseSchedule(ScheduleSpec spec, double[] betas)
    {
        Spec = spec;
        int T = betas.Length;
        Betas = betas;
        Alphas = new double[T];
        AlphasBar = new double[T];
        AlphasBarPrev = new double[T];
        double product = 1;
        for (int i = 0; i < T; i++)
        {
            if (!(betas[i] > 0 && betas[i] < 1))
                throw new ArgumentException($"β_{i + 1} = {betas[i]} is outside (0, 1)");
            Alphas[i] = 1 - betas[i];
            AlphasBarPrev[i] = product;
            product *= Alphas[i];
            AlphasBar[i] = product;
        }
        SqrtAlphasBar = Map(i => Math.Sqrt(AlphasBar[i]));
        SqrtOneMinusAlphasBar = Map(i => Math.Sqrt(1 - AlphasBar[i]));
        SqrtRecipAlphasBar = Map(i => Math.Sqrt(1 / AlphasBar[i]));
        SqrtRecipAlphasBarMinusOne = Map(i => Math.Sqrt(1 / AlphasBar[i] - 1));
        RecipSqrtAlphas = Map(i => 1 / Math.Sqrt(Alphas[i]));
        EpsCoefficients = Map(i => Betas[i] / Math.Sqrt(1 - AlphasBar[i]));
        // β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t  (seed: posterior variance; DESIGN.md §3). β̃_1 = 0.
        PosteriorVariances = Map(i => (1 - AlphasBarPrev[i]) / (1 - AlphasBar[i]) * Betas[i]);
        // log β̃ with the t = 1 entry replaced by β̃_2, as the DDPM reference code does (β̃_1 = 0).
        PosteriorLogVariancesClipped = Map(i => Math.Log(i == 0 && T > 1 ? PosteriorVariances[1] : PosteriorVariances[i]));
        // μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) · x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) · x_t
        PosteriorMeanCoefX0 = Map(i => Math.Sqrt(AlphasBarPrev[i]) * Betas[i] / (1 - AlphasBar[i]));
        PosteriorMeanCoefXt = Map(i => Math.Sqrt(Alphas[i]) * (1 - AlphasBarPrev[i]) / (1 - AlphasBar[i]));
        // "Fixed large" σ_t² = β_t, but β̃_2 at the first step (the seed's code: cat([posterior_var[1:2], betas[1:]])).
        LargeVariances = Map(i => i == 0 && T > 1 ? PosteriorVariances[1] : Betas[i]);
    }

    /// <summary>The spec that built these tables.</summary>
    public ScheduleSpec Spec { get; }

    /// <summary>T, the number of diffusion steps.</summary>
    public int Timesteps => Betas.Length;

    /// <summary>β_t.</summary>
    public double[] Betas { get; }
    /// <summary>α_t = 1 − β_t.</summary>
    public double[] Alphas { get; }
    /// <summary>ᾱ_t = Π_{s≤t} α_s.</summary>
    public double[] AlphasBar { get; }
    /// <summary>ᾱ_{t−1} (1 at the first step).</summary>
    public double[] AlphasBarPrev { get; }
    /// <summary>√ᾱ_t (noising).</summary>
    public double[] SqrtAlphasBar { get; }
    /// <summary>√(1 − ᾱ_t) (noising).</summary>
    public double[] SqrtOneMinusAlphasBar { get; }
    /// <summary>√(1/ᾱ_t) (x_0 from ε).</summary>
    public double[] SqrtRecipAlphasBar { get; }
    /// <summary>√(1/ᾱ_t − 1) (x_0 from ε).</summary>
    public double[] SqrtRecipAlphasBarMinusOne { get; }
    /// <summary>1/√α_t (ε-form posterior mean; the seed's coeff1).</summary>
    public double[] RecipSqrtAlphas { get; }
    /// <summary>β_t/√(1 − ᾱ_t) (ε-form posterior mean; the seed's coeff2 = coeff1 · this).</summary>
    public double[] EpsCoefficients { get; }
    /// <summary>β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t.</summary>
    public double[] PosteriorVariances { get; }
    /// <summary>log β̃_t, the first entry replaced by log β̃_2.</summary>
    public double[] PosteriorLogVariancesClipped { get; }
    /// <summary>√ᾱ_{t−1} β_t/(1 − ᾱ_t).</summary>
    public double[] PosteriorMeanCoefX0 { get; }
    /// <summary>√α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t).</summary>
    public double[] PosteriorMeanCoefXt { get; }
    /// <summary>"Fixed large" σ_t² = β_t, with β̃_2 at the first step.</summary>
    public double[] LargeVariances { get; }

    /// <summary>Linear β from <paramref name="betaStart"/> to <paramref name="betaEnd"/> (DDPM: 1e−4 → 0.02, T = 1000).</summary>
    public static NoiseSchedule Linear(int timesteps = 1000, double betaStart = 1e-4, double betaEnd = 0.02)
    {
        if (timesteps < 2) throw new ArgumentException($"the schedule needs at least 2 timesteps, got {timesteps}");
        if (!(betaStart > 0 && betaEnd < 1 && betaStart <= betaEnd))
            throw new ArgumentException($"linear schedule needs 0 < β_start ≤ β_end < 1, got {betaStart} and {betaEnd}");
        var betas = new double[timesteps];
        for (int i = 0; i < timesteps; i++)
            betas[i] = betaStart + (betaEnd - betaStart) * i / (timesteps - 1); // torch.linspace
        return new NoiseSchedule(new ScheduleSpec(ScheduleKind.Linear, timesteps, betaStart, betaEnd), betas);
    }

    /// <summary>
    /// Cosine schedule (Nichol &amp; Dhariwal 2021, eq. 17): ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2),
    /// s = 0.008, β_t = min(1 − ᾱ(t)/ᾱ(t−1), 0.999).
    /// </summary>
    public static NoiseSchedule Cosine(int timesteps = 1000, double s = 0.008)
    {
        if (timesteps < 2) throw new ArgumentException($"the schedule needs at least 2 timesteps, got {timesteps}");
        static double F(double t, int T, double s) { double c = Math.Cos((t / T + s) / (1 + s) * Math.PI / 2); return c * c; }
        var betas = new double[timesteps];
        for (int i = 0; i < timesteps; i++)
            betas[i] = Math.Min(1 - F(i + 1, timesteps, s) / F(i, timesteps, s), 0.999);
        return new NoiseSchedule(new ScheduleSpec(ScheduleKind.Cosine, timesteps), betas);
    }

    /// <summary>A table as float32, for upload to the device.</summary>
    public static float[] ToFloat(double[] table) => Array.ConvertAll(table, v => (float)v);

    private double[] Map(Func<int, double> f)
    {
        var a = new double[Betas.Length];
        for (int i = 0; i < a.Length; i++) a[i] = f(i);
        return a;
    }
}
