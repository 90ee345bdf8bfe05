using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Diffusion;

// Notation (DESIGN.md §3, seed 000_92cdfaa6972a9857): β_t, α_t = 1 − β_t, ᾱ_t = Π_{i≤t} α_i; timesteps are
// 0-based in code (index t is the paper's step t+1), and ᾱ_{−1} = 1.

/// <summary>The reverse-process variance σ_t² of the DDPM sampler.</summary>
public enum PosteriorVariance
{
    /// <summary>σ_t² = β_t ("fixed large"; at t = 0 the VLB uses β̃ of index 1, as the seed's code does).</summary>
    FixedLarge,
    /// <summary>σ_t² = β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) ("fixed small"; log-variance clipped to β̃ of index 1 at t = 0).</summary>
    FixedSmall,
}

/// <summary>Host-side schedule arithmetic in double shared by the coefficient factories.</summary>
internal static class Schedule
{
    /// <summary>ᾱ_t = Π_{i≤t}(1 − β_i) in double; ᾱ_{−1} = 1.</summary>
    public static double AlphaBar(ReadOnlySpan<double> betas, int t)
    {
        double a = 1;
        for (int i = 0; i <= t; i++) a *= 1 - betas[i];
        return a;
    }

    public static void CheckBetas(ReadOnlySpan<double> betas, string what)
    {
        if (betas.Length == 0) throw new ArgumentException($"{what}: the schedule has no timesteps");
        foreach (double b in betas)
            if (!(b > 0 && b < 1)) throw new ArgumentException($"{what}: every beta must be in (0, 1), got {b}");
    }

    public static void CheckStep(int t, int count, string what)
    {
        if (t < 0 || t >= count) throw new ArgumentException($"{what}: timestep {t} is outside [0, {count})");
    }
}

/// <summary>
/// Float coefficients of one DDPM reverse step at 0-based timestep t (Algorithm 2, line 4), computed on the
/// host in double (<see cref="FromBetas"/> or <see cref="Create"/>) and passed to the kernel by value.
/// ε form: μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t. x0 form (clipped): x̂0 = clip(√(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε, −1, 1),
/// μ = coef_x0 x̂0 + coef_xt x_t with the posterior coefficients of q(x_{t−1} | x_t, x_0).
/// </summary>
public readonly struct PosteriorStepCoefficients
{
    /// <summary>1/√α_t.</summary>
    public readonly float RecipSqrtAlpha;
    /// <summary>β_t/√(1 − ᾱ_t).</summary>
    public readonly float EpsCoefficient;
    /// <summary>√(1/ᾱ_t).</summary>
    public readonly float SqrtRecipAlphaBar;
    /// <summary>√(1/ᾱ_t − 1).</summary>
    public readonly float SqrtRecipAlphaBarMinusOne;
    /// <summary>coef_x0 = √ᾱ_{t−1} β_t/(1 − ᾱ_t).</summary>
    public readonly float PosteriorCoefX0;
    /// <summary>coef_xt = √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t).</summary>
    public readonly float PosteriorCoefXt;
    /// <summary>σ_t, the standard deviation of the noise the step adds; 0 at t = 0 (no noise at the last step).</summary>
    public readonly float Sigma;
    /// <summary>1 = predict x̂0, clip it to [−1, 1] and use the x0 form; 0 = ε form.</summary>
    public readonly int ClipFlag;
    /// <summary>log σ² of p_θ(x_{t−1} | x_t) for the variational bound (never −∞: at t = 0 it is log β̃ of index 1). Not used by the kernels.</summary>
    public readonly float ModelLogVariance;
    /// <summary>log β̃_t of q(x_{t−1} | x_t, x_0), clipped at t = 0 to log β̃ of index 1. Not used by the kernels.</summary>
    public readonly float PosteriorLogVariance;

    private PosteriorStepCoefficients(double beta, double alphaBar, double alphaBarPrev, double sigma, bool clip,
                                      double modelLogVariance, double posteriorLogVariance)
    {
        double alpha = 1 - beta;
        RecipSqrtAlpha = (float)(1 / Math.Sqrt(alpha));
        EpsCoefficient = (float)(beta / Math.Sqrt(1 - alphaBar));
        SqrtRecipAlphaBar = (float)Math.Sqrt(1 / alphaBar);
        SqrtRecipAlphaBarMinusOne = (float)Math.Sqrt(1 / alphaBar - 1);
        PosteriorCoefX0 = (float)(Math.Sqrt(alphaBarPrev) * beta / (1 - alphaBar));
        PosteriorCoefXt = (float)(Math.Sqrt(alpha) * (1 - alphaBarPrev) / (1 - alphaBar));
        Sigma = (float)sigma;
        ClipFlag = clip ? 1 : 0;
        ModelLogVariance = (float)modelLogVariance;
        PosteriorLogVariance = (float)posteriorLogVariance;
    }

    /// <summary>True when the step clips the predicted x̂0 to [−1, 1].</summary>
    public bool Clip => ClipFlag != 0;

    /// <summary>
    /// From scalars in double: β_t, ᾱ_t, ᾱ_{t−1} (1 at t = 0), the sampling variance σ_t² (pass 0 for the last
    /// step: no noise) and the log-variances the variational bound uses.
    /// </summary>
    public static PosteriorStepCoefficients Create(double beta, double alphaBar, double alphaBarPrev, double variance, bool clip,
                                                   double modelLogVariance = double.NaN, double posteriorLogVariance = double.NaN)
    {
        if (!(beta > 0 && beta < 1)) throw new ArgumentException($"posterior step: beta must be in (0, 1), got {beta}");
        if (!(alphaBar > 0 && alphaBar < 1)) throw new ArgumentException($"posterior step: alphaBar must be in (0, 1), got {alphaBar}");
        if (!(alphaBarPrev > 0 && alphaBarPrev <= 1)) throw new ArgumentException($"posterior step: alphaBarPrev must be in (0, 1], got {alphaBarPrev}");
        if (!(variance >= 0) || double.IsInfinity(variance)) throw new ArgumentException($"posterior step: variance must be finite and ≥ 0, got {variance}");
        return new PosteriorStepCoefficients(beta, alphaBar, alphaBarPrev, Math.Sqrt(variance), clip, modelLogVariance, posteriorLogVariance);
    }

    /// <summary>
    /// The coefficients of step <paramref name="t"/> (0-based) of the schedule <paramref name="betas"/> (β in
    /// double, length T). σ_t² = β_t (FixedLarge) or β̃_t (FixedSmall), and σ = 0 at t = 0. The log-variances
    /// follow the DDPM / improved-DDPM code: at t = 0 both use β̃ of index 1 (β_0 when T = 1).
    /// </summary>
    public static PosteriorStepCoefficients FromBetas(ReadOnlySpan<double> betas, int t, PosteriorVariance variance, bool clip)
    {
        Schedule.CheckBetas(betas, "posterior step");
        Schedule.CheckStep(t, betas.Length, "posterior step");
        double alphaBar = Schedule.AlphaBar(betas, t);
        double alphaBarPrev = Schedule.AlphaBar(betas, t - 1);
        double beta = betas[t];
        double posteriorVariance = beta * (1 - alphaBarPrev) / (1 - alphaBar); // β̃_t
        double clippedPosteriorVariance = t > 0 ? posteriorVariance
            : betas.Length > 1 ? betas[1] * (1 - Schedule.AlphaBar(betas, 0)) / (1 - Schedule.AlphaBar(betas, 1))
            : beta;
        double sampling = variance == PosteriorVariance.FixedLarge ? beta : posteriorVariance;
        double modelVariance = t == 0 ? clippedPosteriorVariance : sampling;
        return new PosteriorStepCoefficients(beta, alphaBar, alphaBarPrev, t == 0 ? 0 : Math.Sqrt(sampling), clip,
                                             Math.Log(modelVariance), Math.Log(clippedPosteriorVariance));
    }
}

/// <summary>
/// Float coefficients of one DDIM step (Song et al. 2021, eq. 12) from timestep t to t_prev (any earlier
/// timestep; −1 = the end, ᾱ = 1), computed on the host in double. σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev).
/// </summary>
public readonly struct DdimStepCoefficients
{
    /// <summary>√ᾱ_t.</summary>
    public readonly float SqrtAlphaBar;
    /// <summary>1/√ᾱ_t.</summary>
    public readonly float RecipSqrtAlphaBar;
    /// <summary>√(1 − ᾱ_t).</summary>
    public readonly float SqrtOneMinusAlphaBar;
    /// <summary>1/√(1 − ᾱ_t).</summary>
    public readonly float RecipSqrtOneMinusAlphaBar;
    /// <summary>√ᾱ_prev.</summary>
    public readonly float SqrtAlphaBarPrev;
    /// <summary>√(1 − ᾱ_prev − σ²), the coefficient of the "direction pointing to x_t".</summary>
    public readonly float DirectionCoefficient;
    /// <summary>σ (0 when η = 0: deterministic).</summary>
    public readonly float Sigma;
    /// <summary>1 = clip x̂0 to [−1, 1] (and re-derive ε from it).</summary>
    public readonly int ClipFlag;

    private DdimStepCoefficients(double alphaBar, double alphaBarPrev, double eta, bool clip)
    {
        double sigma = eta * Math.Sqrt((1 - alphaBarPrev) / (1 - alphaBar)) * Math.Sqrt(Math.Max(0, 1 - alphaBar / alphaBarPrev));
        SqrtAlphaBar = (float)Math.Sqrt(alphaBar);
        RecipSqrtAlphaBar = (float)(1 / Math.Sqrt(alphaBar));
        SqrtOneMinusAlphaBar = (float)Math.Sqrt(1 - alphaBar);
        RecipSqrtOneMinusAlphaBar = (float)(1 / Math.Sqrt(1 - alphaBar));
        SqrtAlphaBarPrev = (float)Math.Sqrt(alphaBarPrev);
        DirectionCoefficient = (float)Math.Sqrt(Math.Max(0, 1 - alphaBarPrev - sigma * sigma));
        Sigma = (float)sigma;
        ClipFlag = clip ? 1 : 0;
    }

    /// <summary>True when x̂0 is clipped to [−1, 1].</summary>
    public bool Clip => ClipFlag != 0;

    /// <summary>From ᾱ_t and ᾱ_prev (1 for the final step) in double; η ≥ 0 (0 = deterministic DDIM, 1 = DDPM-like).</summary>
    public static DdimStepCoefficients Create(double alphaBar, double alphaBarPrev, double eta, bool clip)
    {
        if (!(alphaBar > 0 && alphaBar < 1)) throw new ArgumentException($"DDIM step: alphaBar must be in (0, 1), got {alphaBar}");
        if (!(alphaBarPrev >= alphaBar && alphaBarPrev <= 1)) throw new ArgumentException($"DDIM step: alphaBarPrev must be in [alphaBar, 1] = [{alphaBar}, 1], got {alphaBarPrev}");
        if (!(eta >= 0) || double.IsInfinity(eta)) throw new ArgumentException($"DDIM step: eta must be finite and ≥ 0, got {eta}");
        return new DdimStepCoefficients(alphaBar, alphaBarPrev, eta, clip);
    }

    /// <summary>The step from 0-based timestep <paramref name="t"/> to <paramref name="tPrev"/> (−1 ≤ tPrev &lt; t) of the schedule <paramref name="betas"/>.</summary>
    public static DdimStepCoefficients FromBetas(ReadOnlySpan<double> betas, int t, int tPrev, double eta, bool clip)
    {
        Schedule.CheckBetas(betas, "DDIM step");
        Schedule.CheckStep(t, betas.Length, "DDIM step");
        if (tPrev < -1 || tPrev >= t) throw new ArgumentException($"DDIM step: tPrev must be in [-1, {t}) (−1 = the end), got {tPrev}");
        return Create(Schedule.AlphaBar(betas, t), Schedule.AlphaBar(betas, tPrev), eta, clip);
    }
}

/// <summary>
/// The fused diffusion kernels (DESIGN.md §3), used directly by the training loop and the samplers:
/// noising (Algorithm 1, lines 3–5), the DDPM reverse step (Algorithm 2, line 4), the DDIM step, and the
/// per-sample terms of the variational bound (Gaussian KL, discretized Gaussian decoder NLL).
/// Noise is Philox4x32-10 (<see cref="Philox.Normal"/>): element i of a call gets stream number
/// key.Offset + i, so a call consumes n·d numbers (advance the key by that much). The elementwise kernels
/// give each thread one Philox block, i.e. the (up to) 4 consecutive elements whose stream numbers share it,
/// and compute those 4 normals with one block and two Box–Muller pairs. No atomics:
/// the per-sample sums of the bound are row reductions of <see cref="ReduceKernels.Rows{TTerm, TSink}"/>, so every result is bit-repeatable.
/// </summary>
public sealed class DiffusionKernels : IKernelFamily<DiffusionKernels>
{
    private readonly ComputeDevice device;
    private readonly ReduceKernels reduce;

    private DiffusionKernels(ComputeDevice device)
    {
        this.device = device;
        reduce = device.Kernels<ReduceKernels>();
    }

    /// <inheritdoc/>
    public static DiffusionKernels Create(ComputeDevice device) => new(device);

    // ---------------------------------------------------------------- shared helpers

    /// <summary>
    /// The four normals of Philox block <paramref name="block"/>: exactly <see cref="Philox.Normal"/> of stream
    /// numbers 4·block … 4·block+3 (same expressions), from one block and two Box–Muller pairs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void NormalQuad(ulong seed, uint stream, ulong block, out float z0, out float z1, out float z2, out float z3)
    {
        Philox.Block(seed, stream, block, out uint x0, out uint x1, out uint x2, out uint x3);
        float r0 = MathF.Sqrt(-2.0f * MathF.Log(Philox.ToUniformNonZero(x0)));
        float theta0 = 6.28318530717958647692f * Philox.ToUniform(x1);
        float r1 = MathF.Sqrt(-2.0f * MathF.Log(Philox.ToUniformNonZero(x2)));
        float theta1 = 6.28318530717958647692f * Philox.ToUniform(x3);
        z0 = r0 * MathF.Cos(theta0);
        z1 = r0 * MathF.Sin(theta0);
        z2 = r1 * MathF.Cos(theta1);
        z3 = r1 * MathF.Sin(theta1);
    }

    /// <summary>Threads of a quad-mapped launch: the Philox blocks touched by stream numbers offset … offset+n−1.</summary>
    private static int QuadThreads(ulong offset, int n) => (int)(((offset + (ulong)n - 1) >> 2) - (offset >> 2) + 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Clamp1(float x) => x < -1f ? -1f : x > 1f ? 1f : x;

    // ---------------------------------------------------------------- noising (training)

    // x0 [n·d], t [n] (0-based), sqrtAlphaBar [T], sqrtOneMinusAlphaBar [T] → eps [n·d], xt [n·d]:
    //   eps[i] = N(0,1)(seed, stream, offset + i)
    //   xt[i]  = √ᾱ_{t[s]} x0[i] + √(1−ᾱ_{t[s]}) eps[i],  s = i / d      (seed: Algorithm 1, lines 3–5;
    //   q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I), the closed form of the forward process)
    // Thread j covers Philox block (offset >> 2) + j, i.e. elements i with offset + i in that block.
    internal readonly struct NoiseKernel(ArrayView<float> x0, ArrayView<int> t, ArrayView<float> sqrtAlphaBar, ArrayView<float> sqrtOneMinusAlphaBar, ArrayView<float> eps, ArrayView<float> xt, ulong seed, uint stream, ulong offset, int n, int d) : IThreadKernel
    {
        public void Execute(int j)
        {
            ulong block = (offset >> 2) + (ulong)j;
            NormalQuad(seed, stream, block, out float z0, out float z1, out float z2, out float z3);
            ulong first = (block << 2) - offset; // element of lane 0 (wraps around for lanes before the offset)
            NoiseElement(x0, t, sqrtAlphaBar, sqrtOneMinusAlphaBar, eps, xt, first, z0, n, d);
            NoiseElement(x0, t, sqrtAlphaBar, sqrtOneMinusAlphaBar, eps, xt, first + 1, z1, n, d);
            NoiseElement(x0, t, sqrtAlphaBar, sqrtOneMinusAlphaBar, eps, xt, first + 2, z2, n, d);
            NoiseElement(x0, t, sqrtAlphaBar, sqrtOneMinusAlphaBar, eps, xt, first + 3, z3, n, d);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void NoiseElement(ArrayView<float> x0, ArrayView<int> t, ArrayView<float> sqrtAlphaBar, ArrayView<float> sqrtOneMinusAlphaBar,
                                     ArrayView<float> eps, ArrayView<float> xt, ulong element, float z, int n, int d)
    {
        if (element >= (ulong)n) return;
        int i = (int)element;
        int step = t[i / d];
        eps[i] = z;
        xt[i] = sqrtAlphaBar[step] * x0[i] + sqrtOneMinusAlphaBar[step] * z;
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
        device.Launch(QuadThreads(key.Offset, total), new NoiseKernel(x0, t, sqrtAlphaBar, sqrtOneMinusAlphaBar, eps, xt, key.Seed, key.Stream, key.Offset, total, d));
    }

    // ---------------------------------------------------------------- DDPM reverse step (sampling)

    // xt, eps [n] → output [n]:  x_{t−1} = μ_θ(x_t, t) + σ_t z   (seed: Algorithm 2, line 4; z = 0 at t = 0)
    //   ε form:   μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t                      (seed: μ̃_t in ε form)
    //   x0 form:  x̂0 = clip(√(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε, −1, 1)      (seed: x_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t)
    //             μ = √ᾱ_{t−1} β_t/(1−ᾱ_t) x̂0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t   (seed: μ̃_t(x_t, x_0))
    // addNoise = 0 writes the mean only. Quad-mapped like NoiseKernel.
    internal readonly struct PosteriorStepKernel(ArrayView<float> xt, ArrayView<float> eps, ArrayView<float> output, PosteriorStepCoefficients c, int addNoise, ulong seed, uint stream, ulong offset, int n) : IThreadKernel
    {
        public void Execute(int j)
        {
            ulong block = (offset >> 2) + (ulong)j;
            float z0 = 0f, z1 = 0f, z2 = 0f, z3 = 0f;
            if (addNoise != 0) NormalQuad(seed, stream, block, out z0, out z1, out z2, out z3);
            ulong first = (block << 2) - offset;
            PosteriorElement(xt, eps, output, c, addNoise, first, z0, n);
            PosteriorElement(xt, eps, output, c, addNoise, first + 1, z1, n);
            PosteriorElement(xt, eps, output, c, addNoise, first + 2, z2, n);
            PosteriorElement(xt, eps, output, c, addNoise, first + 3, z3, n);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PosteriorElement(ArrayView<float> xt, ArrayView<float> eps, ArrayView<float> output, PosteriorStepCoefficients c,
                                         int addNoise, ulong element, float z, int n)
    {
        if (element >= (ulong)n) return;
        int i = (int)element;
        float x = xt[i];
        float e = eps[i];
        float mean;
        if (c.ClipFlag != 0)
        {
            float x0 = Clamp1(c.SqrtRecipAlphaBar * x - c.SqrtRecipAlphaBarMinusOne * e);
            mean = c.PosteriorCoefX0 * x0 + c.PosteriorCoefXt * x;
        }
        else
        {
            mean = c.RecipSqrtAlpha * (x - c.EpsCoefficient * e);
        }
        output[i] = addNoise != 0 ? mean + c.Sigma * z : mean;
    }

    /// <summary>
    /// One DDPM reverse step (Algorithm 2, line 4): output = μ_θ(x_t, t) + σ_t z with z = Philox.Normal(key, i),
    /// μ from the model's ε prediction in ε form, or via the clipped x̂0 when <c>c.Clip</c>. No noise (and no
    /// random numbers drawn) when σ_t = 0, i.e. at t = 0. xt, eps, output [n]; output may be xt (in place).
    /// Consumes n numbers of the key's stream.
    /// </summary>
    public void PosteriorStep(ArrayView<float> xt, ArrayView<float> eps, in PosteriorStepCoefficients c, PhiloxKey key, ArrayView<float> output)
    {
        int n = CheckSameLength(xt, eps, output, "PosteriorStep", "xt, eps and output");
        if (n == 0) return;
        int addNoise = c.Sigma != 0f ? 1 : 0;
        device.Launch(QuadThreads(key.Offset, n), new PosteriorStepKernel(xt, eps, output, c, addNoise, key.Seed, key.Stream, key.Offset, n));
    }

    /// <summary>
    /// The mean μ_θ(x_t, t) of the reverse step only (σ = 0), ε or clipped-x0 form as <c>c.Clip</c> says — for the
    /// variational bound. xt, eps, mean [n]; mean may be xt.
    /// </summary>
    public void PosteriorMean(ArrayView<float> xt, ArrayView<float> eps, in PosteriorStepCoefficients c, ArrayView<float> mean)
    {
        int n = CheckSameLength(xt, eps, mean, "PosteriorMean", "xt, eps and mean");
        if (n == 0) return;
        device.Launch(QuadThreads(0, n), new PosteriorStepKernel(xt, eps, mean, c, 0, 0UL, 0u, 0UL, n));
    }

    // x0, xt [n] → mean [n]: μ̃_t(x_t, x_0) = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t
    // (seed: the mean of q(x_{t−1} | x_t, x_0)). 4 elements per thread.
    internal readonly struct PosteriorMeanFromX0Kernel(ArrayView<float> x0, ArrayView<float> xt, ArrayView<float> mean, PosteriorStepCoefficients c, int n) : IThreadKernel
    {
        public void Execute(int j)
        {
            int i = j * 4;
            int end = i + 4 < n ? i + 4 : n;
            for (; i < end; i++) mean[i] = c.PosteriorCoefX0 * x0[i] + c.PosteriorCoefXt * xt[i];
        }
    }

    /// <summary>
    /// The mean of the true posterior q(x_{t−1} | x_t, x_0): coef_x0·x0 + coef_xt·xt (for the variational bound's
    /// KL terms; its log-variance is <c>c.PosteriorLogVariance</c>). x0, xt, mean [n]; mean may alias either.
    /// </summary>
    public void PosteriorMeanFromX0(ArrayView<float> x0, ArrayView<float> xt, in PosteriorStepCoefficients c, ArrayView<float> mean)
    {
        int n = CheckSameLength(x0, xt, mean, "PosteriorMeanFromX0", "x0, xt and mean");
        if (n == 0) return;
        device.Launch((n + 3) / 4, new PosteriorMeanFromX0Kernel(x0, xt, mean, c, n));
    }

    // ---------------------------------------------------------------- DDIM step

    // xt, eps [n] → output [n]   (Song et al. 2021, eq. 12):
    //   x̂0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t   (clipped to [−1, 1] when asked; then ε is re-derived from it,
    //         ε' = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t), as the improved-DDPM and diffusers samplers do)
    //   x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε' + σ z
    internal readonly struct DdimStepKernel(ArrayView<float> xt, ArrayView<float> eps, ArrayView<float> output, DdimStepCoefficients c, ulong seed, uint stream, ulong offset, int n) : IThreadKernel
    {
        public void Execute(int j)
        {
            ulong block = (offset >> 2) + (ulong)j;
            float z0 = 0f, z1 = 0f, z2 = 0f, z3 = 0f;
            if (c.Sigma != 0f) NormalQuad(seed, stream, block, out z0, out z1, out z2, out z3);
            ulong first = (block << 2) - offset;
            DdimElement(xt, eps, output, c, first, z0, n);
            DdimElement(xt, eps, output, c, first + 1, z1, n);
            DdimElement(xt, eps, output, c, first + 2, z2, n);
            DdimElement(xt, eps, output, c, first + 3, z3, n);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DdimElement(ArrayView<float> xt, ArrayView<float> eps, ArrayView<float> output, DdimStepCoefficients c, ulong element, float z, int n)
    {
        if (element >= (ulong)n) return;
        int i = (int)element;
        float x = xt[i];
        float e = eps[i];
        float x0 = (x - c.SqrtOneMinusAlphaBar * e) * c.RecipSqrtAlphaBar;
        if (c.ClipFlag != 0)
        {
            x0 = Clamp1(x0);
            e = (x - c.SqrtAlphaBar * x0) * c.RecipSqrtOneMinusAlphaBar;
        }
        float result = c.SqrtAlphaBarPrev * x0 + c.DirectionCoefficient * e;
        output[i] = c.Sigma != 0f ? result + c.Sigma * z : result;
    }

    /// <summary>
    /// One DDIM step (Song et al. 2021, eq. 12) from t to t_prev: x̂0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (clipped, with ε
    /// re-derived, when <c>c.Clip</c>), x_prev = √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ²) ε + σ z. With η = 0 (σ = 0) it is
    /// deterministic and draws no numbers. xt, eps, output [n]; output may be xt. Consumes n numbers when σ &gt; 0.
    /// </summary>
    public void DdimStep(ArrayView<float> xt, ArrayView<float> eps, in DdimStepCoefficients c, PhiloxKey key, ArrayView<float> output)
    {
        int n = CheckSameLength(xt, eps, output, "DdimStep", "xt, eps and output");
        if (n == 0) return;
        device.Launch(QuadThreads(key.Offset, n), new DdimStepKernel(xt, eps, output, c, key.Seed, key.Stream, key.Offset, n));
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
