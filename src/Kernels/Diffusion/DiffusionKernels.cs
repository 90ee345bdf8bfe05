using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Diffusion;

// Notation (DESIGN.md §3, seed 000_92cdfaa6972a9857): β_t, α_t = 1 − β_t, ᾱ_t = Π_{i≤t} α_i; timesteps are
// 0-based in code (index t is the paper's step t+1), and ᾱ_{−1} = 1.

/// <summary>
/// The float coefficients of one reverse step, computed on the host in double by a sampler
/// (src/Diffusion/Sampling) and passed to <see cref="DiffusionKernels.ReverseStep"/> by value:
/// x̂0 = clip?(P·x_t − Q·ε̂) (clipped to [−1, 1] when <see cref="ClipFlag"/> is 1), x_prev = A·x̂0 + B·x_t + σ·z.
/// DDPM (posterior mean of q(x_{t−1} | x_t, x̂0)) and DDIM (Song et al. 2021, eq. 12) are both this form.
/// </summary>
public readonly struct ReverseStepCoefficients
{
    /// <summary>P: x̂0 = P·x_t − Q·ε̂ (1/√ᾱ_t).</summary>
    public readonly float P;
    /// <summary>Q (√(1/ᾱ_t − 1)).</summary>
    public readonly float Q;
    /// <summary>A, the weight of x̂0.</summary>
    public readonly float A;
    /// <summary>B, the weight of x_t.</summary>
    public readonly float B;
    /// <summary>σ, the standard deviation of the added noise; 0 draws no numbers.</summary>
    public readonly float Sigma;
    /// <summary>1 = clip x̂0 to [−1, 1].</summary>
    public readonly int ClipFlag;

    /// <summary>From the coefficients in double; <paramref name="sigma"/> must be finite and ≥ 0.</summary>
    public ReverseStepCoefficients(double p, double q, double a, double b, double sigma, bool clip)
    {
        if (!double.IsFinite(p) || !double.IsFinite(q) || !double.IsFinite(a) || !double.IsFinite(b))
            throw new ArgumentException($"reverse step: coefficients must be finite, got P = {p}, Q = {q}, A = {a}, B = {b}");
        if (!(sigma >= 0) || double.IsInfinity(sigma)) throw new ArgumentException($"reverse step: sigma must be finite and ≥ 0, got {sigma}");
        P = (float)p;
        Q = (float)q;
        A = (float)a;
        B = (float)b;
        Sigma = (float)sigma;
        ClipFlag = clip ? 1 : 0;
    }

    /// <summary>True when x̂0 is clipped to [−1, 1].</summary>
    public bool Clip => ClipFlag != 0;

    /// <summary>The same step without noise (the mean only), e.g. for the variational bound.</summary>
    public ReverseStepCoefficients WithoutNoise() => new(P, Q, A, B, 0, Clip);

    /// <inheritdoc/>
    public override string ToString() => $"P={P}, Q={Q}, A={A}, B={B}, σ={Sigma}, clip={Clip}";
}

/// <summary>
/// The fused diffusion kernels (DESIGN.md §3), used directly by the training loop and the samplers:
/// noising (Algorithm 1, lines 3–5), the reverse step of every sampler (DDPM's Algorithm 2, line 4, and DDIM), and the
/// per-sample terms of the variational bound (Gaussian KL, discretized Gaussian decoder NLL).
/// Noise is Philox4x32-10 (<see cref="Philox.Normal"/>): element i of a call gets stream number
/// key.Offset + i, so a call consumes n·d numbers (advance the key by that much); the noising and the reverse step
/// are <see cref="IRandomElement"/>s (one Philox block per four elements, <see cref="RandomKernels.ForEach{TOp}"/>). No atomics:
/// the per-sample sums of the bound are row reductions of <see cref="ReduceKernels.Rows{TTerm, TSink}"/>, so every result is bit-repeatable.
/// </summary>
public sealed class DiffusionKernels : IKernelFamily<DiffusionKernels>
{
    /// <summary>
    /// Self-check probes: forward noising, the reverse step of every sampler (coefficients of the DDPM step at
    /// t = 999 and t = 500 and of a DDIM step), and the bound's terms. Tolerance: Box–Muller noise as in Random;
    /// exp/log in the KL and the decoder's CDF differences.
    /// </summary>
    public static KernelProbes Probes { get; } = new("Diffusion", 1e-3,
    [
        new KernelProbe("Noise n=4 d=300", k => k.Kernels<DiffusionKernels>().Noise(k.In(1200).View, k.Upload(new[] { 0, 17, 500, 999 }).View,
            k.Upload(Array.ConvertAll(ProbeAlphaBar, a => (float)Math.Sqrt(a))).View, k.Upload(Array.ConvertAll(ProbeAlphaBar, a => (float)Math.Sqrt(1 - a))).View,
            new PhiloxKey(99, 3, 5), k.Out(1200).View, k.Out(1200).View, 4, 300)),
        .. new[] { new ReverseStepCoefficients(158.2, 158.2, 1.3e-4, 0.99, 0.14, true), new ReverseStepCoefficients(1.7, 1.4, 0.05, 0.97, 0.0, false),
            new ReverseStepCoefficients(3.1, 2.9, 0.4, 0.31, 0.2, true) }.Select(c => new KernelProbe($"ReverseStep {c}", k =>
            k.Kernels<DiffusionKernels>().ReverseStep(k.In(1200, -3f, 3f).View, k.In(1200, -2f, 2f).View, c, new PhiloxKey(99, 3, 5), k.Out(1200).View))),
        new KernelProbe("GaussianKL, PriorKL, DiscretizedGaussianNll n=4 d=300", k =>
        {
            var diffusion = k.Kernels<DiffusionKernels>();
            // x0 on the 256 levels of 8-bit data, as the decoder expects.
            var x0 = k.Upload(Array.ConvertAll(k.Data(1200, 0f, 256f), v => Math.Min(255f, MathF.Floor(v)) / 127.5f - 1f));
            float scale = (float)(1 / (300 * Math.Log(2)));
            diffusion.GaussianKL(k.In(1200).View, -4.5f, k.In(1200).View, -4.2f, k.Out(4).View, 4, 300, scale);
            diffusion.PriorKL(x0.View, ProbeAlphaBar[^1], k.Out(4).View, 4, 300, scale);
            diffusion.DiscretizedGaussianNll(x0.View, k.In(1200).View, -6f, k.Out(4).View, 4, 300, scale);
        }),
    ]);

    /// <summary>ᾱ_t of the linear schedule β_t from 1e-4 to 0.02 over T = 1000 steps (Ho et al. 2020, §4), for the probes.</summary>
    private static double[] ProbeAlphaBar
    {
        get
        {
            var bars = new double[1000];
            double bar = 1;
            for (int i = 0; i < bars.Length; i++) bars[i] = bar *= 1 - (1e-4 + (0.02 - 1e-4) * i / 999);
            return bars;
        }
    }

    private readonly ComputeDevice device;
    private readonly ReduceKernels reduce;

    private DiffusionKernels(ComputeDevice device) => (this.device, reduce) = (device, device.Kernels<ReduceKernels>());

    /// <inheritdoc/>
    public static DiffusionKernels Create(ComputeDevice device) => new(device);

    // ---------------------------------------------------------------- noising (training)

    // x0 [n·d], t [n] (0-based), sqrtAlphaBar [T], sqrtOneMinusAlphaBar [T] → eps [n·d], xt [n·d]:
    //   eps[i] = N(0,1)(seed, stream, offset + i)
    //   xt[i]  = √ᾱ_{t[s]} x0[i] + √(1−ᾱ_{t[s]}) eps[i],  s = i / d      (seed: Algorithm 1, lines 3–5;
    //   q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I), the closed form of the forward process)
    internal readonly struct NoiseOp(ArrayView<float> x0, ArrayView<int> t, ArrayView<float> sqrtAlphaBar, ArrayView<float> sqrtOneMinusAlphaBar, ArrayView<float> eps, ArrayView<float> xt, int d) : IRandomElement
    {
        public RandomDraw Draw => RandomDraw.Normal;

        public void Apply(int i, float z)
        {
            int step = t[i / d];
            eps[i] = z;
            xt[i] = sqrtAlphaBar[step] * x0[i] + sqrtOneMinusAlphaBar[step] * z;
        }
    }

    /// <summary>
    /// Fused noising (Algorithm 1, lines 3–5): eps[i] = Philox.Normal(key.Seed, key.Stream, key.Offset + i) and
    /// xt = √ᾱ_t x0 + √(1−ᾱ_t) eps with t = t[sample]. x0, eps, xt [n·d]; t [n], 0-based, each in [0, T) (not
    /// checked on the device); sqrtAlphaBar and sqrtOneMinusAlphaBar [T] float tables computed in double.
    /// Consumes n·d numbers of the key's stream. xt may be x0 (in place); eps must be its own buffer.
    /// </summary>
    public void Noise(ArrayView<float> x0, ArrayView<int> t, ArrayView<float> sqrtAlphaBar, ArrayView<float> sqrtOneMinusAlphaBar,
                      PhiloxKey key, ArrayView<float> eps, ArrayView<float> xt, int n, int d)
    {
        int total = CheckSamples(n, d, "Noise");
        if (x0.Length != total || eps.Length != total || xt.Length != total)
            throw new ArgumentException($"Noise: x0, eps and xt must have n·d = {total} elements, got {x0.Length}, {eps.Length}, {xt.Length}");
        if (t.Length != n) throw new ArgumentException($"Noise: t must have n = {n} elements, got {t.Length}");
        if (sqrtAlphaBar.Length == 0 || sqrtOneMinusAlphaBar.Length != sqrtAlphaBar.Length)
            throw new ArgumentException($"Noise: sqrtAlphaBar and sqrtOneMinusAlphaBar must be non-empty tables of equal length T, got {sqrtAlphaBar.Length} and {sqrtOneMinusAlphaBar.Length}");
        if (total == 0) return;
        RandomKernels.ForEach(device, new NoiseOp(x0, t, sqrtAlphaBar, sqrtOneMinusAlphaBar, eps, xt, d), key, total);
    }

    // ---------------------------------------------------------------- the reverse step (sampling)

    // xt, eps [n] → output [n]:  x̂0 = clip?(P·x_t − Q·ε̂),  x_prev = A·x̂0 + B·x_t + σ·z   (z from the key
    // when σ ≠ 0). DDPM (Algorithm 2, line 4, with the posterior mean μ̃_t(x_t, x̂0)) and DDIM (Song et al.
    // 2021, eq. 12) are this one form; src/Diffusion/Sampling computes their coefficients.
    internal readonly struct ReverseStepOp(ArrayView<float> xt, ArrayView<float> eps, ArrayView<float> output, ReverseStepCoefficients c) : IRandomElement
    {
        public RandomDraw Draw => c.Sigma != 0f ? RandomDraw.Normal : RandomDraw.None;

        public void Apply(int i, float z)
        {
            float x = xt[i];
            float x0 = c.P * x - c.Q * eps[i];
            if (c.ClipFlag != 0) x0 = x0 < -1f ? -1f : x0 > 1f ? 1f : x0;
            float result = c.A * x0 + c.B * x;
            output[i] = c.Sigma != 0f ? result + c.Sigma * z : result;
        }
    }

    /// <summary>
    /// One reverse step: x̂0 = clip?(P·x_t − Q·ε̂), output = A·x̂0 + B·x_t + σ·z with z = Philox.Normal(key, i).
    /// No noise (and no random numbers drawn) when σ = 0. xt, eps, output [n]; output may be xt (in place).
    /// Consumes n numbers of the key's stream when σ ≠ 0.
    /// </summary>
    public void ReverseStep(ArrayView<float> xt, ArrayView<float> eps, in ReverseStepCoefficients c, PhiloxKey key, ArrayView<float> output)
    {
        int n = CheckSameLength(xt, eps, output, "ReverseStep", "xt, eps and output");
        if (n == 0) return;
        RandomKernels.ForEach(device, new ReverseStepOp(xt, eps, output, c), c.Sigma != 0f ? key : default, n);
    }

    // ---------------------------------------------------------------- variational bound terms

    // (sa·a[i] − sb·b[i])², the squared-difference term of the Gaussian KL.
    internal readonly struct ScaledSquaredDifferenceTerm(ArrayView<float> a, float sa, ArrayView<float> b, float sb) : IReductionTerm
    {
        public float At(int row, int i)
        {
            float u = sa * a[i] - sb * b[i];
            return u * u;
        }
    }

    /// <summary>
    /// The standard normal CDF approximation of the DDPM / improved-DDPM code,
    /// Φ(x) ≈ 0.5(1 + tanh(√(2/π)(x + 0.044715x³))), written as the equal logistic 1/(1 + e^{−2y}) so that the
    /// left tail does not cancel (the approximation is odd-symmetric: 1 − Φ(x) = Φ(−x)).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float ApproxStandardNormalCdf(float x)
    {
        float y = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 1f / (1f + MathF.Exp(-2f * y));
    }

    // −log p(x0 | μ, σ) of one element under the discretized Gaussian decoder (DDPM paper eq. 13; improved-DDPM
    // discretized_gaussian_log_likelihood): data on 256 levels in [−1, 1], bin [x − 1/255, x + 1/255], the edge
    // bins extended to ∓∞, log(max(·, 1e-12)). Upper-tail differences use 1 − Φ(x) = Φ(−x) (no cancellation).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float DiscretizedNll(float x, float mean, float invStd)
    {
        float centered = x - mean;
        float plusIn = invStd * (centered + 1f / 255f);
        float minIn = invStd * (centered - 1f / 255f);
        float p;
        if (x < -0.999f) p = ApproxStandardNormalCdf(plusIn);
        else if (x > 0.999f) p = ApproxStandardNormalCdf(-minIn);
        else if (minIn > 0f) p = ApproxStandardNormalCdf(-minIn) - ApproxStandardNormalCdf(-plusIn);
        else p = ApproxStandardNormalCdf(plusIn) - ApproxStandardNormalCdf(minIn);
        return -MathF.Log(p > 1e-12f ? p : 1e-12f);
    }

    // −log p(x0[i] | means[i], σ), the decoder term.
    internal readonly struct DiscretizedNllTerm(ArrayView<float> x0, ArrayView<float> means, float invStd) : IReductionTerm
    {
        public float At(int row, int i) => DiscretizedNll(x0[i], means[i], invStd);
    }

    // output[s] = (accumulate ? output[s] : 0) + constant + factor·Σ_row.
    internal readonly struct PerSampleSink(ArrayView<float> output, float constant, float factor, int accumulate) : IReductionSink
    {
        public void Write(int s, float total)
        {
            float value = constant + factor * total;
            output[s] = accumulate != 0 ? output[s] + value : value;
        }
    }

    /// <summary>
    /// Per sample, Σ_d KL(N(μ1, e^{lv1}) ‖ N(μ2, e^{lv2})) = Σ_d 0.5(−1 + lv2 − lv1 + e^{lv1−lv2} + (μ1−μ2)² e^{−lv2})
    /// in nats, with per-element means [n·d] and scalar log-variances (e.g. the true posterior vs p_θ: L_{t−1}).
    /// output [n] = scale · that (scale 1/(d·ln 2) gives bits per dimension); accumulate adds to output instead.
    /// </summary>
    public void GaussianKL(ArrayView<float> mean1, float logVariance1, ArrayView<float> mean2, float logVariance2,
                           ArrayView<float> output, int n, int d, float scale = 1f, bool accumulate = false)
    {
        int total = CheckSamples(n, d, "GaussianKL");
        if (mean1.Length != total || mean2.Length != total)
            throw new ArgumentException($"GaussianKL: mean1 and mean2 must have n·d = {total} elements, got {mean1.Length} and {mean2.Length}");
        KL(mean1, 1f, logVariance1, mean2, 1f, logVariance2, output, n, d, scale, accumulate, "GaussianKL");
    }

    /// <summary>
    /// The prior term L_T per sample: Σ_d KL(q(x_T | x_0) ‖ N(0, I)) = Σ_d KL(N(√ᾱ_T x0, 1 − ᾱ_T) ‖ N(0, 1)), in nats
    /// times scale. <paramref name="alphaBarLast"/> is ᾱ of the last timestep in double. x0 [n·d], output [n].
    /// </summary>
    public void PriorKL(ArrayView<float> x0, double alphaBarLast, ArrayView<float> output, int n, int d, float scale = 1f, bool accumulate = false)
    {
        int total = CheckSamples(n, d, "PriorKL");
        if (x0.Length != total) throw new ArgumentException($"PriorKL: x0 must have n·d = {total} elements, got {x0.Length}");
        if (!(alphaBarLast > 0 && alphaBarLast < 1)) throw new ArgumentException($"PriorKL: alphaBarLast must be in (0, 1), got {alphaBarLast}");
        KL(x0, (float)Math.Sqrt(alphaBarLast), Math.Log(1 - alphaBarLast), x0, 0f, 0, output, n, d, scale, accumulate, "PriorKL");
    }

    // Σ_d KL = d·c0 + c1·Σ_d (μ1 − μ2)², c0 = 0.5(−1 + lv2 − lv1 + e^{lv1−lv2}), c1 = 0.5 e^{−lv2}, both in double.
    private void KL(ArrayView<float> a, float sa, double lv1, ArrayView<float> b, float sb, double lv2,
                    ArrayView<float> output, int n, int d, float scale, bool accumulate, string what)
    {
        if (output.Length != n) throw new ArgumentException($"{what}: output must have n = {n} elements, got {output.Length}");
        if (!double.IsFinite(lv1) || !double.IsFinite(lv2)) throw new ArgumentException($"{what}: log-variances must be finite, got {lv1} and {lv2}");
        if (!float.IsFinite(scale)) throw new ArgumentException($"{what}: scale must be finite, got {scale}");
        if (n == 0) return;
        double c0 = 0.5 * (-1 + lv2 - lv1 + Math.Exp(lv1 - lv2));
        double c1 = 0.5 * Math.Exp(-lv2);
        reduce.Rows(new ScaledSquaredDifferenceTerm(a, sa, b, sb), new PerSampleSink(output, (float)(scale * d * c0), (float)(scale * c1), accumulate ? 1 : 0), n, d);
    }

    /// <summary>
    /// The decoder term L_0 per sample: −Σ_d log p(x0 | μ, σ²) under the discretized Gaussian of the DDPM paper
    /// (eq. 13): x0 [n·d] on the 256 levels of [−1, 1], bins of half-width 1/255, the edge bins extended to ±∞,
    /// the standard normal CDF by the tanh approximation, each bin's probability floored at 1e-12. means
    /// [n·d] (μ_θ(x_1, 1)), scalar log-variance (<see cref="PosteriorStepCoefficients.ModelLogVariance"/> of t = 0).
    /// output [n] = scale · nats (1/(d·ln 2) for bits per dimension); accumulate adds to output instead.
    /// </summary>
    public void DiscretizedGaussianNll(ArrayView<float> x0, ArrayView<float> means, float logVariance,
                                       ArrayView<float> output, int n, int d, float scale = 1f, bool accumulate = false)
    {
        int total = CheckSamples(n, d, "DiscretizedGaussianNll");
        if (x0.Length != total || means.Length != total)
            throw new ArgumentException($"DiscretizedGaussianNll: x0 and means must have n·d = {total} elements, got {x0.Length} and {means.Length}");
        if (output.Length != n) throw new ArgumentException($"DiscretizedGaussianNll: output must have n = {n} elements, got {output.Length}");
        if (!float.IsFinite(logVariance)) throw new ArgumentException($"DiscretizedGaussianNll: logVariance must be finite, got {logVariance}");
        if (!float.IsFinite(scale)) throw new ArgumentException($"DiscretizedGaussianNll: scale must be finite, got {scale}");
        if (n == 0) return;
        float invStd = (float)Math.Exp(-0.5 * logVariance);
        reduce.Rows(new DiscretizedNllTerm(x0, means, invStd), new PerSampleSink(output, 0f, scale, accumulate ? 1 : 0), n, d);
    }

    // ---------------------------------------------------------------- validation

    private static int CheckSamples(int n, int d, string what)
    {
        if (n < 0 || d < 0) throw new ArgumentException($"{what}: n and d must be ≥ 0, got n = {n}, d = {d}");
        long total = (long)n * d;
        if (total > int.MaxValue) throw new ArgumentException($"{what}: n·d = {total} exceeds {int.MaxValue} elements");
        return (int)total;
    }

    private static int CheckSameLength(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, string what, string names)
    {
        if (b.Length != a.Length || c.Length != a.Length)
            throw new ArgumentException($"{what}: {names} must have the same length, got {a.Length}, {b.Length}, {c.Length}");
        return checked((int)a.Length);
    }
}
