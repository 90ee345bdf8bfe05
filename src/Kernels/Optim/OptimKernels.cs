using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Optim;

/// <summary>
/// Adam hyper-parameters (Kingma &amp; Ba 2015) with optional decoupled weight decay (AdamW, Loshchilov &amp;
/// Hutter 2019). <c>new AdamSettings()</c> gives β1 = 0.9, β2 = 0.999, ε = 1e-8, no weight decay (the DDPM
/// paper's optimizer; its learning rate comes per step, see <see cref="ForStep"/>).
/// </summary>
public readonly record struct AdamSettings
{
    /// <summary>The defaults: β1 0.9, β2 0.999, ε 1e-8, weight decay 0.</summary>
    public AdamSettings() { }

    /// <summary>Decay of the first moment, in [0, 1).</summary>
    public float Beta1 { get; init; } = 0.9f;

    /// <summary>Decay of the second moment, in [0, 1).</summary>
    public float Beta2 { get; init; } = 0.999f;

    /// <summary>Added to √v̂ in the denominator, &gt; 0.</summary>
    public float Epsilon { get; init; } = 1e-8f;

    /// <summary>Decoupled weight decay: p −= lr·wd·p each step (AdamW). 0 = plain Adam.</summary>
    public float WeightDecay { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentException($"Adam beta1 must be in [0, 1), got {Beta1}");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentException($"Adam beta2 must be in [0, 1), got {Beta2}");
        if (!(Epsilon > 0)) throw new ArgumentException($"Adam epsilon must be positive, got {Epsilon}");
        if (!(WeightDecay >= 0) || float.IsInfinity(WeightDecay)) throw new ArgumentException($"Adam weight decay must be finite and ≥ 0, got {WeightDecay}");
    }

    /// <summary>
    /// The kernel coefficients for update number <paramref name="step"/> (1-based: the first update is
    /// step 1) at learning rate <paramref name="learningRate"/>. The bias corrections 1 − β^t are computed
    /// here in double and passed to the kernel as floats.
    /// </summary>
    public AdamStep ForStep(long step, double learningRate)
    {
        Validate();
        if (step < 1) throw new ArgumentException($"Adam step must be ≥ 1 (the first update is step 1), got {step}");
        if (!(learningRate >= 0) || double.IsInfinity(learningRate)) throw new ArgumentException($"learning rate must be finite and ≥ 0, got {learningRate}");
        double b1 = Beta1, b2 = Beta2;
        double correction1 = 1 - Math.Pow(b1, step);
        double correction2 = 1 - Math.Pow(b2, step);
        return new AdamStep(
            (float)learningRate, Beta1, (float)(1 - b1), Beta2, (float)(1 - b2), Epsilon, WeightDecay,
            (float)(1 / correction1), (float)(1 / correction2));
    }
}

/// <summary>
/// The per-step coefficients of the fused Adam kernel (a kernel parameter; build it with
/// <see cref="AdamSettings.ForStep"/>). InvBiasCorrection1 = 1/(1 − β1^t), InvBiasCorrection2 = 1/(1 − β2^t).
/// </summary>
public readonly struct AdamStep(
    float learningRate, float beta1, float oneMinusBeta1, float beta2, float oneMinusBeta2,
    float epsilon, float weightDecay, float invBiasCorrection1, float invBiasCorrection2)
{
    /// <summary>lr.</summary>
    public readonly float LearningRate = learningRate;
    /// <summary>β1.</summary>
    public readonly float Beta1 = beta1;
    /// <summary>1 − β1 (from double).</summary>
    public readonly float OneMinusBeta1 = oneMinusBeta1;
    /// <summary>β2.</summary>
    public readonly float Beta2 = beta2;
    /// <summary>1 − β2 (from double).</summary>
    public readonly float OneMinusBeta2 = oneMinusBeta2;
    /// <summary>ε.</summary>
    public readonly float Epsilon = epsilon;
    /// <summary>Decoupled weight decay.</summary>
    public readonly float WeightDecay = weightDecay;
    /// <summary>1/(1 − β1^t).</summary>
    public readonly float InvBiasCorrection1 = invBiasCorrection1;
    /// <summary>1/(1 − β2^t).</summary>
    public readonly float InvBiasCorrection2 = invBiasCorrection2;
}

/// <summary>
/// Optimizer kernels used directly by the training loop (no tape): fused Adam(W), the global gradient
/// norm over many tensors with clipping — entirely on the device, nothing read back — and the EMA of the
/// weights. All deterministic: no atomics; the sums of squares and the norm are row reductions of
/// <see cref="ReduceKernels.Rows{TTerm, TSink}"/>. The element-wise kernels are grid-stride loops.
/// </summary>
public sealed class OptimKernels : IKernelFamily<OptimKernels>
{
    /// <summary>Self-check probes. Tolerance: Adam's sqrt and divide, a few ulps; norms are positive sums in another order.</summary>
    public static KernelProbes Probes { get; } = new("Optim", 1e-4,
    [
        .. new[] { 1000, 10_007 }.Select(n => new KernelProbe($"Adam (plain and clip-scaled), EMA n={n}", k =>
        {
            var (optim, p, g, m, v) = (k.Kernels<OptimKernels>(), k.Acc(n), k.In(n, -0.1f, 0.1f), k.Acc(n, -0.01f, 0.01f), k.Acc(n, 0f, 1e-3f));
            optim.Adam(p.View, g.View, m.View, v.View, new AdamSettings { WeightDecay = 0.01f }.ForStep(3, 2e-4));
            optim.Adam(p.View, g.View, m.View, v.View, new AdamSettings().ForStep(4, 1e-3), k.Upload(new[] { 1.7f, 0.4f }).View, 1);
            optim.Ema(k.Acc(n).View, p.View, 0.999f);
        })),
        new KernelProbe("global-norm clip scale over 3 tensors (SumOfSquares per tensor, ClipScale)", k =>
        {
            var (optim, partials) = (k.Kernels<OptimKernels>(), k.Out(3));
            foreach (var (length, slot) in new[] { (70_001, 0), (257, 1), (3, 2) }) optim.SumOfSquares(k.In(length).View, partials.View, slot);
            optim.ClipScale(partials.View, 3, 1f, k.Out(2).View);
        }),
        // The path training takes (ParameterOptimizer): the flat buffers' per-tensor Σg², the clip scale, Adam + EMA in one launch.
        new KernelProbe("multi-tensor step over 3 tensors in one flat buffer (SumsOfSquares, ClipScale, AdamEma)", k =>
        {
            int[] offsets = [0, 70_001, 70_258], lengths = [70_001, 257, 3];
            int total = offsets[^1] + lengths[^1];
            var (optim, multi) = (k.Kernels<OptimKernels>(), k.Kernels<MultiTensorKernels>());
            var (p, g, m, v, ema) = (k.Acc(total), k.In(total, -0.1f, 0.1f), k.Acc(total, -0.01f, 0.01f), k.Acc(total, 0f, 1e-3f), k.Acc(total));
            using var segments = new TensorSegments(k.Device, offsets, lengths, total);
            var (sums, normAndScale) = (k.Out(lengths.Length), k.Out(2));
            multi.SumsOfSquares(g.View, segments, k.Out(segments.Segments).View, sums.View);
            optim.ClipScale(sums.View, lengths.Length, 0.5f, normAndScale.View);
            multi.AdamEma(p.View, g.View, m.View, v.View, new AdamSettings { WeightDecay = 0.01f }.ForStep(3, 2e-4), normAndScale.View, 1, ema.View, 0.999f);
            k.Device.Synchronize(); // the segment tables go back to the pool only after the launches that read them
        }),
    ]);

    private readonly ComputeDevice device;
    private readonly ReduceKernels reduce;

    private OptimKernels(ComputeDevice device) => (this.device, reduce) = (device, device.Kernels<ReduceKernels>());

    /// <inheritdoc/>
    public static OptimKernels Create(ComputeDevice device) => new(device);

    // ---------------------------------------------------------------- Adam(W)

    // p, g, m, v [n] (one parameter tensor), in place, g scaled by the device scalar scale[scaleIndex]
    // (the clip scale; a 1 when there is none):
    //   m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;  m̂ = m/(1−β1^t);  v̂ = v/(1−β2^t)
    //   p −= lr·( m̂/(√v̂ + ε) + wd·p )          (Kingma & Ba 2015, Alg. 1; decoupled decay: AdamW)
    internal readonly struct AdamKernel(ArrayView<float> p, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, AdamStep s,
                                        ArrayView<float> scale, int scaleIndex) : IElementKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Element(int j)
        {
            float g = scaleIndex < 0 ? grad[j] : grad[j] * scale[scaleIndex];
            float mj = s.Beta1 * m[j] + s.OneMinusBeta1 * g;
            float vj = s.Beta2 * v[j] + s.OneMinusBeta2 * (g * g);
            m[j] = mj;
            v[j] = vj;
            float mHat = mj * s.InvBiasCorrection1;
            float vHat = vj * s.InvBiasCorrection2;
            float pj = p[j];
            p[j] = pj - s.LearningRate * (mHat / (MathF.Sqrt(vHat) + s.Epsilon) + s.WeightDecay * pj);
        }
    }

    /// <summary>
    /// One fused Adam(W) update of one parameter tensor, in place on <paramref name="param"/>,
    /// <paramref name="firstMoment"/> and <paramref name="secondMoment"/> (all the length of the parameter;
    /// moments start at zero): m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; p −= lr·(m̂/(√v̂ + ε) + wd·p).
    /// </summary>
    public void Adam(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> firstMoment, ArrayView<float> secondMoment, in AdamStep step)
    {
        int n = CheckAdam(param, grad, firstMoment, secondMoment);
        device.LaunchElements(n, new AdamKernel(param, grad, firstMoment, secondMoment, step, grad, -1));
    }

    /// <summary>
    /// <see cref="Adam(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, in AdamStep)"/> with
    /// the gradient multiplied by the device scalar <c>gradScale[scaleIndex]</c> first — pass the
    /// <c>normAndScale</c> of <see cref="ClipScale"/> and index 1 to fuse gradient clipping into the update
    /// (the gradient buffer itself is left unscaled).
    /// </summary>
    public void Adam(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> firstMoment, ArrayView<float> secondMoment, in AdamStep step,
                     ArrayView<float> gradScale, int scaleIndex) =>
        device.LaunchElements(checked((int)param.Length), ScaledAdamBody(param, grad, firstMoment, secondMoment, step, gradScale, scaleIndex));

    /// <summary>The checked element body of the scaled Adam update, also fused by <see cref="MultiTensorKernels.AdamEma"/>.</summary>
    internal static AdamKernel ScaledAdamBody(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> firstMoment, ArrayView<float> secondMoment,
                                              in AdamStep step, ArrayView<float> gradScale, int scaleIndex)
    {
        CheckAdam(param, grad, firstMoment, secondMoment);
        if (scaleIndex < 0 || scaleIndex >= gradScale.Length)
            throw new ArgumentException($"Adam: scale index {scaleIndex} is outside gradScale's {gradScale.Length} elements");
        return new AdamKernel(param, grad, firstMoment, secondMoment, step, gradScale, scaleIndex);
    }

    private static int CheckAdam(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v)
    {
        long n = param.Length;
        if (grad.Length != n || m.Length != n || v.Length != n)
            throw new ArgumentException($"Adam: param, grad, first and second moment must all have {n} elements, got grad {grad.Length}, m {m.Length}, v {v.Length}");
        return checked((int)n);
    }

    // ---------------------------------------------------------------- global gradient norm

    /// <summary>
    /// partials[slot] = Σ x² of one tensor, by the deterministic row reduction on the device. Call it once per
    /// gradient tensor, each with its own slot, then <see cref="ClipScale"/>. Nothing is read back to the host.
    /// An empty x writes 0.
    /// </summary>
    public void SumOfSquares(ArrayView<float> x, ArrayView<float> partials, int slot, ReductionVariant variant = ReductionVariant.Auto)
    {
        CheckScalarIndex(partials, slot, "partials");
        reduce.Rows(new SquareTerm(x), new StoreSink(partials, slot, 1f), 1, checked((int)x.Length), variant);
    }

    // normAndScale [2]: norm = √Σ partials, scale = min(1, maxNorm/(norm + 1e-6))  (torch.nn.utils.clip_grad_norm_'s rule).
    internal readonly struct ClipSink(float maxNorm, ArrayView<float> normAndScale) : IReductionSink
    {
        public void Write(int row, float total)
        {
            float norm = MathF.Sqrt(total);
            float scale = maxNorm / (norm + 1e-6f);
            normAndScale[0] = norm;
            normAndScale[1] = scale >= 1f ? 1f : scale; // NaN stays NaN
        }
    }

    /// <summary>
    /// From the first <paramref name="count"/> per-tensor sums of squares (<see cref="SumOfSquares"/>) writes
    /// normAndScale[0] = global norm √Σ partials and normAndScale[1] = min(1, maxNorm/(norm + 1e-6)), on the
    /// device. maxNorm = +∞ only measures the norm (scale 1). A NaN norm gives a NaN scale.
    /// </summary>
    public void ClipScale(ArrayView<float> partials, int count, float maxNorm, ArrayView<float> normAndScale)
    {
        if (count < 0 || count > partials.Length)
            throw new ArgumentException($"ClipScale: count must be in [0, {partials.Length}] (the partials length), got {count}");
        if (normAndScale.Length < 2)
            throw new ArgumentException($"ClipScale: normAndScale must have at least 2 elements (norm, scale), got {normAndScale.Length}");
        if (!(maxNorm > 0)) throw new ArgumentException($"ClipScale: maxNorm must be positive, got {maxNorm}");
        reduce.Rows(new ValueTerm(partials), new ClipSink(maxNorm, normAndScale), 1, count);
    }

    // ---------------------------------------------------------------- EMA

    // ema, p [n]: ema = decay·ema + (1−decay)·p   (Polyak averaging of the weights, as in the DDPM code).
    internal readonly struct EmaKernel(ArrayView<float> ema, ArrayView<float> p, float decay, float oneMinusDecay) : IElementKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Element(int j) => ema[j] = decay * ema[j] + oneMinusDecay * p[j];
    }

    /// <summary>ema = decay·ema + (1−decay)·param, in place; decay in [0, 1] (1 − decay computed in double).</summary>
    public void Ema(ArrayView<float> ema, ArrayView<float> param, float decay) =>
        device.LaunchElements(checked((int)ema.Length), EmaBody(ema, param, decay));

    /// <summary>The checked element body of the EMA update, also fused by <see cref="MultiTensorKernels.AdamEma"/>.</summary>
    internal static EmaKernel EmaBody(ArrayView<float> ema, ArrayView<float> param, float decay)
    {
        if (ema.Length != param.Length)
            throw new ArgumentException($"Ema: ema and param must have the same length, got {ema.Length} and {param.Length}");
        if (!(decay >= 0 && decay <= 1)) throw new ArgumentException($"Ema: decay must be in [0, 1], got {decay}");
        return new EmaKernel(ema, param, decay, (float)(1 - (double)decay));
    }

    private static void CheckScalarIndex(ArrayView<float> view, int index, string name)
    {
        if (index < 0 || index >= view.Length)
            throw new ArgumentException($"{name}: index {index} is outside its {view.Length} elements");
    }
}
