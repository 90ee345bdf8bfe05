using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Plain double-precision references for the fused diffusion kernels, straight from the formulas of
/// DESIGN.md §3 and the seed (and the improved-DDPM code for the decoder likelihood). Noise comes from the
/// host <see cref="Philox.Normal"/> with the same key, so it is the kernels' noise exactly.
/// </summary>
public static class DiffusionKernelReference
{
    /// <summary>β linear from 1e-4 to 0.02 (T = 1000 by default), as torch.linspace(beta_1, beta_T, T).double().</summary>
    public static double[] LinearBetas(int steps = 1000, double first = 1e-4, double last = 0.02)
    {
        var b = new double[steps];
        for (int i = 0; i < steps; i++) b[i] = steps == 1 ? first : first + (last - first) * i / (steps - 1);
        return b;
    }

    /// <summary>ᾱ_t = Π_{i≤t} (1 − β_i).</summary>
    public static double[] AlphaBars(double[] betas)
    {
        var a = new double[betas.Length];
        double p = 1;
        for (int i = 0; i < betas.Length; i++) a[i] = p *= 1 - betas[i];
        return a;
    }

    /// <summary>ᾱ_{t}, with ᾱ_{−1} = 1.</summary>
    public static double AlphaBar(double[] betas, int t) => t < 0 ? 1 : AlphaBars(betas)[t];

    /// <summary>The host Philox normals key.Offset + i, i &lt; n.</summary>
    public static double[] Normals(PhiloxKey key, int n)
    {
        var z = new double[n];
        for (int i = 0; i < n; i++) z[i] = Philox.Normal(key.Seed, key.Stream, key.Offset + (ulong)i);
        return z;
    }

    /// <summary>Algorithm 1, lines 3–5: eps = Philox normals; x_t = √ᾱ_t x0 + √(1−ᾱ_t) eps with t per sample.</summary>
    public static (double[] Eps, double[] Xt) Noise(float[] x0, int[] t, double[] betas, PhiloxKey key, int n, int d)
    {
        var alphaBar = AlphaBars(betas);
        var eps = Normals(key, n * d);
        var xt = new double[n * d];
        for (int s = 0; s < n; s++)
            for (int e = 0; e < d; e++)
            {
                int i = s * d + e;
                xt[i] = Math.Sqrt(alphaBar[t[s]]) * x0[i] + Math.Sqrt(1 - alphaBar[t[s]]) * eps[i];
            }
        return (eps, xt);
    }

    /// <summary>ε-form mean μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t.</summary>
    public static double[] MeanFromEps(float[] xt, float[] eps, double[] betas, int t)
    {
        double beta = betas[t], alphaBar = AlphaBar(betas, t);
        var mu = new double[xt.Length];
        for (int i = 0; i < xt.Length; i++) mu[i] = (xt[i] - beta / Math.Sqrt(1 - alphaBar) * eps[i]) / Math.Sqrt(1 - beta);
        return mu;
    }

    /// <summary>x̂0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t, optionally clipped to [−1, 1].</summary>
    public static double[] PredictX0(float[] xt, float[] eps, double alphaBar, bool clip)
    {
        var x0 = new double[xt.Length];
        for (int i = 0; i < xt.Length; i++)
        {
            x0[i] = (xt[i] - Math.Sqrt(1 - alphaBar) * eps[i]) / Math.Sqrt(alphaBar);
            if (clip) x0[i] = Math.Clamp(x0[i], -1, 1);
        }
        return x0;
    }

    /// <summary>Posterior mean μ̃ = √ᾱ_{t−1} β_t/(1−ᾱ_t) x0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t.</summary>
    public static double[] MeanFromX0(double[] x0, float[] xt, double[] betas, int t)
    {
        double beta = betas[t], alphaBar = AlphaBar(betas, t), prev = AlphaBar(betas, t - 1);
        var mu = new double[xt.Length];
        for (int i = 0; i < xt.Length; i++)
            mu[i] = Math.Sqrt(prev) * beta / (1 - alphaBar) * x0[i] + Math.Sqrt(1 - beta) * (1 - prev) / (1 - alphaBar) * xt[i];
        return mu;
    }

    /// <summary>σ_t² of the sampler: β_t (fixed large) or β̃_t (fixed small).</summary>
    public static double SamplingVariance(double[] betas, int t, bool fixedLarge)
    {
        double beta = betas[t], alphaBar = AlphaBar(betas, t), prev = AlphaBar(betas, t - 1);
        return fixedLarge ? beta : beta * (1 - prev) / (1 - alphaBar);
    }

    /// <summary>Algorithm 2, line 4: x_{t−1} = μ + σ_t z, z = 0 at t = 0; μ in ε form, or from the clipped x̂0.</summary>
    public static double[] PosteriorStep(float[] xt, float[] eps, double[] betas, int t, bool fixedLarge, bool clip, PhiloxKey key)
    {
        var mu = clip
            ? MeanFromX0(PredictX0(xt, eps, AlphaBar(betas, t), true), xt, betas, t)
            : MeanFromEps(xt, eps, betas, t);
        if (t == 0) return mu;
        double sigma = Math.Sqrt(SamplingVariance(betas, t, fixedLarge));
        var z = Normals(key, xt.Length);
        for (int i = 0; i < mu.Length; i++) mu[i] += sigma * z[i];
        return mu;
    }

    /// <summary>
    /// DDIM (Song et al. 2021, eq. 12) from t to tPrev (−1 = end): x̂0 (clipped, ε re-derived from it, when asked),
    /// x_prev = √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ²) ε + σ z, σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev).
    /// </summary>
    public static double[] Ddim(float[] xt, float[] eps, double[] betas, int t, int tPrev, double eta, bool clip, PhiloxKey key)
    {
        double a = AlphaBar(betas, t), ap = AlphaBar(betas, tPrev);
        double sigma = eta * Math.Sqrt((1 - ap) / (1 - a)) * Math.Sqrt(1 - a / ap);
        var x0 = PredictX0(xt, eps, a, clip);
        var z = Normals(key, xt.Length);
        var result = new double[xt.Length];
        for (int i = 0; i < xt.Length; i++)
        {
            double e = clip ? (xt[i] - Math.Sqrt(a) * x0[i]) / Math.Sqrt(1 - a) : eps[i];
            result[i] = Math.Sqrt(ap) * x0[i] + Math.Sqrt(Math.Max(0, 1 - ap - sigma * sigma)) * e + sigma * z[i];
        }
        return result;
    }

    /// <summary>Per sample Σ_d 0.5(−1 + lv2 − lv1 + e^{lv1−lv2} + (μ1−μ2)² e^{−lv2}) (improved-DDPM normal_kl).</summary>
    public static double[] GaussianKL(double[] mean1, double lv1, double[] mean2, double lv2, int n, int d)
    {
        var kl = new double[n];
        for (int s = 0; s < n; s++)
            for (int e = 0; e < d; e++)
            {
                double diff = mean1[s * d + e] - mean2[s * d + e];
                kl[s] += 0.5 * (-1 + lv2 - lv1 + Math.Exp(lv1 - lv2) + diff * diff * Math.Exp(-lv2));
            }
        return kl;
    }

    /// <summary>The tanh approximation of the standard normal CDF (improved-DDPM approx_standard_normal_cdf).</summary>
    public static double ApproxCdf(double x) => 0.5 * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    /// <summary>
    /// Per sample −Σ_d log p(x0 | μ, σ²), transcribed from improved-DDPM's discretized_gaussian_log_likelihood
    /// (log_scales = 0.5·logVariance), in double.
    /// </summary>
    public static double[] DiscretizedNll(float[] x0, float[] means, double logVariance, int n, int d)
    {
        double invStdv = Math.Exp(-0.5 * logVariance);
        var nll = new double[n];
        for (int s = 0; s < n; s++)
            for (int e = 0; e < d; e++)
            {
                double x = x0[s * d + e];
                double centered = x - means[s * d + e];
                double cdfPlus = ApproxCdf(invStdv * (centered + 1.0 / 255.0));
                double cdfMin = ApproxCdf(invStdv * (centered - 1.0 / 255.0));
                double logCdfPlus = Math.Log(Math.Max(cdfPlus, 1e-12));
                double logOneMinusCdfMin = Math.Log(Math.Max(1 - cdfMin, 1e-12));
                double logCdfDelta = Math.Log(Math.Max(cdfPlus - cdfMin, 1e-12));
                double logProb = x < -0.999 ? logCdfPlus : x > 0.999 ? logOneMinusCdfMin : logCdfDelta;
                nll[s] -= logProb;
            }
        return nll;
    }

    /// <summary>The 256 data levels of [−1, 1] as the data loader produces them: k·2/255 − 1 in float.</summary>
    public static float Level(int k) => k * (2f / 255f) - 1f;
}
