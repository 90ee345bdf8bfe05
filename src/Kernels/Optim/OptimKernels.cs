using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

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

/// <summary>How <see cref="OptimKernels.SumOfSquares"/> reduces (tests pin one; production uses Auto).</summary>
internal enum ReductionVariant
{
    /// <summary>Grouped on GPUs, barrier-free on the CPU accelerator.</summary>
    Auto,
    /// <summary>Stage 1: P threads, each a strided partial sum; stage 2: one thread sums the P partials.</summary>
    BarrierFree,
    /// <summary>Stage 1: groups of 128 threads with a shared-memory tree; stage 2: one group of 128.</summary>
    Grouped,
}

/// <summary>
/// Optimizer kernels used directly by the training loop (no tape): fused Adam(W), the global gradient
/// norm over many tensors with clipping — entirely on the device, nothing read back — and the EMA of the
/// weights. All deterministic: no atomics, every sum in a fixed order.
/// Elementwise kernels give each thread 4 elements strided by the thread count (coalesced on GPUs,
/// 4 per OS thread on the CPU accelerator).
/// </summary>
public sealed class OptimKernels : IKernelFamily<OptimKernels>
{
    /// <summary>Elements per thread in the elementwise kernels.</summary>
    internal const int ItemsPerThread = 4;

    /// <summary>Threads per group of the grouped reduction (a power of two).</summary>
    internal const int GroupSize = 128;

    /// <summary>Most stage-1 partial sums: the size of the family's scratch buffer.</summary>
    internal const int MaxPartials = 1024;

    /// <summary>Barrier-free stage 1: at least this many elements per thread.</summary>
    internal const int BarrierFreeChunk = 256;

    /// <summary>Grouped stage 1: at least this many elements per thread.</summary>
    internal const int GroupedChunk = 16;

    private readonly ComputeDevice device;
    private readonly DeviceBuffer<float> scratch;

    private OptimKernels(ComputeDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        scratch = device.Pool.Rent<float>(MaxPartials);
    }

    /// <inheritdoc/>
    public static OptimKernels Create(ComputeDevice device) => new(device);

    private static int Threads(int n) => (n + ItemsPerThread - 1) / ItemsPerThread;

    // ---------------------------------------------------------------- Adam(W)

    // p, g, m, v [n] (one parameter tensor), in place:
    //   m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²;  m̂ = m/(1−β1^t);  v̂ = v/(1−β2^t)
    //   p −= lr·( m̂/(√v̂ + ε) + wd·p )          (Kingma & Ba 2015, Alg. 1; decoupled decay: AdamW)
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void AdamElement(ArrayView<float> p, ArrayView<float> m, ArrayView<float> v, int j, float g, AdamStep s)
    {
        float mj = s.Beta1 * m[j] + s.OneMinusBeta1 * g;
        float vj = s.Beta2 * v[j] + s.OneMinusBeta2 * (g * g);
        m[j] = mj;
        v[j] = vj;
        float mHat = mj * s.InvBiasCorrection1;
        float vHat = vj * s.InvBiasCorrection2;
        float pj = p[j];
        p[j] = pj - s.LearningRate * (mHat / (MathF.Sqrt(vHat) + s.Epsilon) + s.WeightDecay * pj);
    }

    // Thread i updates elements i, i+stride, i+2·stride, i+3·stride (stride = ⌈n/4⌉).
    internal readonly struct AdamKernel(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamStep s, int n, int stride) : IThreadKernel
    {
        public void Execute(int i)
        {
            for (int k = 0; k < ItemsPerThread; k++)
            {
                int j = i + k * stride;
                if (j < n) AdamElement(p, m, v, j, g[j], s);
            }
        }
    }

    // Same, with the gradient first multiplied by the device scalar scale[scaleIndex] (the clip scale).
    internal readonly struct AdamScaledKernel(ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamStep s, ArrayView<float> scale, int scaleIndex, int n, int stride) : IThreadKernel
    {
        public void Execute(int i)
        {
            float c = scale[scaleIndex];
            for (int k = 0; k < ItemsPerThread; k++)
            {
                int j = i + k * stride;
                if (j < n) AdamElement(p, m, v, j, g[j] * c, s);
            }
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
        if (n == 0) return;
        device.Launch(Threads(n), new AdamKernel(param, grad, firstMoment, secondMoment, step, n, Threads(n)));
    }

    /// <summary>
    /// <see cref="Adam(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, in AdamStep)"/> with
    /// the gradient multiplied by the device scalar <c>gradScale[scaleIndex]</c> first — pass the
    /// <c>normAndScale</c> of <see cref="ClipScale"/> and index 1 to fuse gradient clipping into the update
    /// (the gradient buffer itself is left unscaled).
    /// </summary>
    public void Adam(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> firstMoment, ArrayView<float> secondMoment, in AdamStep step,
                     ArrayView<float> gradScale, int scaleIndex)
    {
        int n = CheckAdam(param, grad, firstMoment, secondMoment);
        CheckScalarIndex(gradScale, scaleIndex, "gradScale");
        if (n == 0) return;
        device.Launch(Threads(n), new AdamScaledKernel(param, grad, firstMoment, secondMoment, step, gradScale, scaleIndex, n, Threads(n)));
    }

    private static int CheckAdam(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v)
    {
        long n = param.Length;
        if (grad.Length != n || m.Length != n || v.Length != n)
            throw new ArgumentException($"Adam: param, grad, first and second moment must all have {n} elements, got grad {grad.Length}, m {m.Length}, v {v.Length}");
        return checked((int)n);
    }

    // ---------------------------------------------------------------- global gradient norm

    // Barrier-free stage 1. x [n] → partials [P]: partials[j] = Σ_k x[j + k·P]², k ascending, four
    // interleaved accumulators combined as (a0 + a1) + (a2 + a3). A fixed order, so bit-repeatable.
    internal readonly struct SumOfSquaresPartialsKernel(ArrayView<float> x, ArrayView<float> partials, int n, int p) : IThreadKernel
    {
        public void Execute(int j)
        {
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            int e = j;
            int step4 = 4 * p;
            for (; e + 3 * p < n; e += step4)
            {
                float x0 = x[e], x1 = x[e + p], x2 = x[e + 2 * p], x3 = x[e + 3 * p];
                a0 += x0 * x0; a1 += x1 * x1; a2 += x2 * x2; a3 += x3 * x3;
            }
            for (; e < n; e += p) { float v = x[e]; a0 += v * v; }
            partials[j] = (a0 + a1) + (a2 + a3);
        }
    }

    // Barrier-free stage 2 (one thread). partials [count] → output[slot] = Σ partials (same fixed order).
    internal readonly struct SumPartialsKernel(ArrayView<float> partials, int count, ArrayView<float> output, int slot) : IThreadKernel
    {
        public void Execute(int i)
        {
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            int e = 0;
            for (; e + 3 < count; e += 4) { a0 += partials[e]; a1 += partials[e + 1]; a2 += partials[e + 2]; a3 += partials[e + 3]; }
            for (; e < count; e++) a0 += partials[e];
            output[slot] = (a0 + a1) + (a2 + a3);
        }
    }

    // Tree-sums shared[0..GroupSize) into shared[0]; every thread of the group must call it.
    private static void GroupTreeSum(ArrayView<float> shared, int lane)
    {
        for (int half = GroupSize / 2; half > 0; half >>= 1)
        {
            if (lane < half) shared[lane] += shared[lane + half];
            Group.Barrier();
        }
    }

    // Grouped stage 1 (G groups of 128). x [n] → partials [G]: thread (g, l) sums x[e]² for
    // e = g·128 + l + k·G·128, then the group tree-sums its 128 values into partials[g].
    internal readonly struct SumOfSquaresGroupedKernel(ArrayView<float> x, ArrayView<float> partials, int n) : IGroupKernel
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(GroupSize);
            int lane = Group.IdxX;
            int stride = Grid.DimX * GroupSize;
            float a0 = 0, a1 = 0;
            int e = Grid.IdxX * GroupSize + lane;
            for (; e + stride < n; e += 2 * stride)
            {
                float x0 = x[e], x1 = x[e + stride];
                a0 += x0 * x0; a1 += x1 * x1;
            }
            if (e < n) { float v = x[e]; a0 += v * v; }
            shared[lane] = a0 + a1;
            Group.Barrier();
            GroupTreeSum(shared, lane);
            if (lane == 0) partials[Grid.IdxX] = shared[0];
        }
    }

    // Grouped stage 2 (one group of 128). partials [count] → output[slot] = tree sum of the
    // lane-strided sums Σ_k partials[l + 128k].
    internal readonly struct SumPartialsGroupedKernel(ArrayView<float> partials, int count, ArrayView<float> output, int slot) : IGroupKernel
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(GroupSize);
            int lane = Group.IdxX;
            float a = 0;
            for (int e = lane; e < count; e += GroupSize) a += partials[e];
            shared[lane] = a;
            Group.Barrier();
            GroupTreeSum(shared, lane);
            if (lane == 0) output[slot] = shared[0];
        }
    }

    /// <summary>
    /// partials[slot] = Σ x² of one tensor, by a fixed two-stage reduction on the device (deterministic; the
    /// family's own scratch holds stage 1). Call it once per gradient tensor, each with its own slot, then
    /// <see cref="ClipScale"/>. Nothing is read back to the host. An empty x writes 0.
    /// </summary>
    public void SumOfSquares(ArrayView<float> x, ArrayView<float> partials, int slot) =>
        SumOfSquares(x, partials, slot, ReductionVariant.Auto);

    internal void SumOfSquares(ArrayView<float> x, ArrayView<float> partials, int slot, ReductionVariant variant)
    {
        CheckScalarIndex(partials, slot, "partials");
        int n = checked((int)x.Length);
        if (variant == ReductionVariant.Auto) variant = device.IsCpu ? ReductionVariant.BarrierFree : ReductionVariant.Grouped;
        var stage1 = scratch.View;
        if (variant == ReductionVariant.BarrierFree)
        {
            int p = BarrierFreePartials(n);
            if (n > 0) device.Launch(p, new SumOfSquaresPartialsKernel(x, stage1, n, p));
            device.Launch(1, new SumPartialsKernel(stage1, n > 0 ? p : 0, partials, slot));
        }
        else
        {
            int g = GroupedPartials(n);
            if (n > 0) device.Launch(new KernelConfig(g, GroupSize), new SumOfSquaresGroupedKernel(x, stage1, n));
            device.Launch(new KernelConfig(1, GroupSize), new SumPartialsGroupedKernel(stage1, n > 0 ? g : 0, partials, slot));
        }
    }

    /// <summary>Stage-1 thread count of the barrier-free reduction: ⌈n/256⌉ clamped to [1, 1024].</summary>
    internal static int BarrierFreePartials(int n) => Math.Clamp((int)((n + (long)BarrierFreeChunk - 1) / BarrierFreeChunk), 1, MaxPartials);

    /// <summary>Stage-1 group count of the grouped reduction: ⌈n/(128·16)⌉ clamped to [1, 1024].</summary>
    internal static int GroupedPartials(int n) => Math.Clamp((int)((n + (long)GroupSize * GroupedChunk - 1) / (GroupSize * GroupedChunk)), 1, MaxPartials);

    // One thread. partials [count] → normAndScale [2]: norm = √Σ partials (ascending order),
    // scale = min(1, maxNorm/(norm + 1e-6))  (torch.nn.utils.clip_grad_norm_'s rule).
    internal readonly struct ClipScaleKernel(ArrayView<float> partials, int count, float maxNorm, ArrayView<float> normAndScale) : IThreadKernel
    {
        public void Execute(int i)
        {
            float sum = 0;
            for (int e = 0; e < count; e++) sum += partials[e];
            float norm = MathF.Sqrt(sum);
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
        device.Launch(1, new ClipScaleKernel(partials, count, maxNorm, normAndScale));
    }

    // x [n] *= scale[index] (a device scalar, e.g. the clip scale), 4 elements per thread, strided.
    internal readonly struct ScaleByDeviceScalarKernel(ArrayView<float> x, ArrayView<float> scale, int index, int n, int stride) : IThreadKernel
    {
        public void Execute(int i)
        {
            float c = scale[index];
            for (int k = 0; k < ItemsPerThread; k++)
            {
                int j = i + k * stride;
                if (j < n) x[j] = x[j] * c;
            }
        }
    }

    /// <summary>x *= scale[index], where the scale lives on the device (e.g. normAndScale, index 1). Scale 1 leaves x bit-identical.</summary>
    public void ScaleByDeviceScalar(ArrayView<float> x, ArrayView<float> scale, int index)
    {
        CheckScalarIndex(scale, index, "scale");
        int n = checked((int)x.Length);
        if (n == 0) return;
        device.Launch(Threads(n), new ScaleByDeviceScalarKernel(x, scale, index, n, Threads(n)));
    }

    /// <summary>
    /// Global-norm gradient clipping over many tensors, all on the device: SumOfSquares of each gradient
    /// into partials[0..count), <see cref="ClipScale"/> into normAndScale, then (if
    /// <paramref name="applyScale"/>) every gradient times normAndScale[1]. With applyScale false, pass
    /// normAndScale and index 1 to the fused <c>Adam</c> overload instead.
    /// </summary>
    public void ClipGlobalNorm(IReadOnlyList<ArrayView<float>> gradients, float maxNorm, ArrayView<float> partials, ArrayView<float> normAndScale, bool applyScale = true)
    {
        ArgumentNullException.ThrowIfNull(gradients);
        if (partials.Length < gradients.Count)
            throw new ArgumentException($"ClipGlobalNorm: partials must have at least {gradients.Count} elements (one per gradient), got {partials.Length}");
        for (int k = 0; k < gradients.Count; k++) SumOfSquares(gradients[k], partials, k);
        ClipScale(partials, gradients.Count, maxNorm, normAndScale);
        if (applyScale)
            foreach (var g in gradients) ScaleByDeviceScalar(g, normAndScale, 1);
    }

    // ---------------------------------------------------------------- EMA

    // ema, p [n]: ema = decay·ema + (1−decay)·p   (Polyak averaging of the weights, as in the DDPM code).
    internal readonly struct EmaKernel(ArrayView<float> ema, ArrayView<float> p, float decay, float oneMinusDecay, int n, int stride) : IThreadKernel
    {
        public void Execute(int i)
        {
            for (int k = 0; k < ItemsPerThread; k++)
            {
                int j = i + k * stride;
                if (j < n) ema[j] = decay * ema[j] + oneMinusDecay * p[j];
            }
        }
    }

    /// <summary>ema = decay·ema + (1−decay)·param, in place; decay in [0, 1] (1 − decay computed in double).</summary>
    public void Ema(ArrayView<float> ema, ArrayView<float> param, float decay)
    {
        if (ema.Length != param.Length)
            throw new ArgumentException($"Ema: ema and param must have the same length, got {ema.Length} and {param.Length}");
        if (!(decay >= 0 && decay <= 1)) throw new ArgumentException($"Ema: decay must be in [0, 1], got {decay}");
        int n = checked((int)ema.Length);
        if (n == 0) return;
        device.Launch(Threads(n), new EmaKernel(ema, param, decay, (float)(1 - (double)decay), n, Threads(n)));
    }

    private static void CheckScalarIndex(ArrayView<float> view, int index, string name)
    {
        if (index < 0 || index >= view.Length)
            throw new ArgumentException($"{name}: index {index} is outside its {view.Length} elements");
    }
}
