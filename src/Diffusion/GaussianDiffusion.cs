using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion;

/// <summary>
/// The DDPM of Ho et al. (2020) around a noise-prediction network ε_θ(x_t, t): the training loss
/// (Algorithm 1), the samplers (Algorithm 2 and DDIM) and the variational bound in bits per dimension
/// (DESIGN.md §3, formulas from the seed). The schedule's tables are computed in float64 on the host
/// (<see cref="NoiseSchedule"/>); the two the noising kernel indexes per sample are uploaded once as float32.
/// </summary>
public sealed class GaussianDiffusion : IDisposable
{
    private readonly ComputeDevice device;
    private readonly DiffusionKernels kernels;
    private readonly RandomKernels random;
    private readonly ElementwiseKernels elementwise;
    private readonly DeviceBuffer<float> sqrtAlphasBar;
    private readonly DeviceBuffer<float> sqrtOneMinusAlphasBar;

    /// <summary>A diffusion process on <paramref name="device"/> with <paramref name="schedule"/>.</summary>
    public GaussianDiffusion(ComputeDevice device, NoiseSchedule schedule)
    {
        this.device = device;
        Schedule = schedule;
        kernels = device.Kernels<DiffusionKernels>();
        random = device.Kernels<RandomKernels>();
        elementwise = device.Kernels<ElementwiseKernels>();
        sqrtAlphasBar = device.Pool.Rent<float>(schedule.Timesteps);
        sqrtAlphasBar.CopyFrom(NoiseSchedule.ToFloat(schedule.SqrtAlphasBar));
        sqrtOneMinusAlphasBar = device.Pool.Rent<float>(schedule.Timesteps);
        sqrtOneMinusAlphasBar.CopyFrom(NoiseSchedule.ToFloat(schedule.SqrtOneMinusAlphasBar));
    }

    /// <summary>The β schedule and its derived tables.</summary>
    public NoiseSchedule Schedule { get; }

    /// <summary>T.</summary>
    public int Timesteps => Schedule.Timesteps;

    /// <summary>
    /// L_simple for a batch (Algorithm 1): t ~ U{1..T} per image, ε ~ N(0, I),
    /// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (one fused kernel), loss = mean ‖ε − ε_θ(x_t, t)‖².
    /// Every random number is keyed by (<paramref name="seed"/>, stream, <paramref name="step"/>), so the
    /// same step of a resumed run draws the same t, ε and dropout masks.
    /// </summary>
    /// <param name="x0">Clean images [N, C, H, W] in [−1, 1].</param>
    public Tensor TrainingLoss(Tape tape, UNet model, Tensor x0, ulong seed, long step) => TrainingLoss(tape, model, x0, seed, step, 0, 0);

    /// <summary>
    /// <see cref="TrainingLoss(Tape, UNet, Tensor, ulong, long)"/> on a shard: x0 holds images
    /// <paramref name="firstImage"/>.. of a global batch of <paramref name="globalBatch"/> (0: x0 is the whole
    /// batch). Image i of the global batch of step s draws t from offset s·G + i, ε from (s·G + i)·d and its
    /// dropout numbers where the whole batch would, so the draws depend on (seed, step, global index) and never
    /// on how the batch is split (docs/distributed.md). The loss is the mean over the shard.
    /// </summary>
    public Tensor TrainingLoss(Tape tape, UNet model, Tensor x0, ulong seed, long step, int globalBatch, int firstImage)
    {
        int n = x0.Dim(0), d = x0.Length / n;
        if (globalBatch == 0) globalBatch = n;
        ulong first = (ulong)step * (ulong)globalBatch + (ulong)firstImage;
        using var t = device.Pool.Rent<int>(n);
        random.Integers(t.View, new PhiloxKey(seed, RandomStreams.Timesteps, first), Timesteps);
        var (xt, eps) = Noised(tape, x0, t.View, new PhiloxKey(seed, RandomStreams.TrainingNoise, first * (ulong)d));
        var predicted = model.Forward(tape, xt, t.View, new PhiloxKey(seed, RandomStreams.Dropout, (ulong)step * (ulong)model.DropoutDraws(globalBatch)),
                                      globalBatch, firstImage);
        return tape.MseLoss(predicted, eps);
    }

    /// <summary>
    /// Mean L_simple over <paramref name="count"/> images (no gradient, dropout off), in batches of
    /// <paramref name="batchSize"/>; t and ε are drawn from the evaluation streams of <paramref name="seed"/>.
    /// </summary>
    public double SimpleLoss(UNet model, ReadOnlySpan<float> images, int count, ulong seed, int batchSize = 64)
    {
        var (c, h, w) = ImageShape(model, images, count);
        int d = c * h * w;
        var tape = new Tape(device);
        double total = 0;
        using var noGrad = tape.NoGrad();
        for (int start = 0; start < count; start += batchSize)
        {
            int n = Math.Min(batchSize, count - start);
            using var x0 = Tensor.FromArray(device, images.Slice(start * d, n * d), n, c, h, w);
            using var t = device.Pool.Rent<int>(n);
            random.Integers(t.View, new PhiloxKey(seed, RandomStreams.EvaluationTimesteps, (ulong)start), Timesteps);
            var (xt, eps) = Noised(tape, x0, t.View, new PhiloxKey(seed, RandomStreams.Evaluation, (ulong)start * (ulong)d));
            var loss = tape.MseLoss(model.Forward(tape, xt, t.View, default), eps);
            total += loss.ToScalar() * n;
            tape.Clear();
        }
        return total / count;
    }

    /// <summary>
    /// Generates images with the sampler the options name (<see cref="Samplers.For"/>): x_T ~ N(0, I), then for
    /// each timestep the sampler visits, one network evaluation and one fused reverse-step kernel with the
    /// sampler's coefficients (DDPM: Algorithm 2, no noise at the last step; DDIM: η = 0 deterministic or stochastic).
    /// The result is bit-identical for the same options on the same accelerator.
    /// </summary>
    public SampleResult Sample(UNet model, SampleOptions options, Action<int, int>? progress = null)
    {
        var config = model.Config;
        int count = options.Count, c = config.InChannels, h = config.ImageSize, w = config.ImageSize, d = c * h * w;
        if (count <= 0) throw new ArgumentException($"the number of images must be positive, got {count}");
        var sampler = Samplers.For(options);
        var timesteps = sampler.Timesteps(Schedule);
        int batch = options.BatchSize > 0 ? Math.Min(options.BatchSize, count) : count;
        var images = new float[count * d];
        var frames = new List<float[]>();
        var frameSteps = FrameSteps(timesteps.Length, options.FrameCount);
        for (int f = 0; f < frameSteps.Count; f++) frames.Add(new float[count * d]);

        var tape = new Tape(device);
        using var noGrad = tape.NoGrad();
        for (int start = 0; start < count; start += batch)
        {
            int n = Math.Min(batch, count - start);
            var x = Tensor.Create(device, n, c, h, w);
            var next = Tensor.Create(device, n, c, h, w);
            using var tAll = UploadTimesteps(timesteps, n); // one upload per batch: the steps never wait for the host
            try
            {
                // x_T ~ N(0, I): image i of the whole run always gets the same numbers, whatever the batch size.
                random.Normal(x.View, new PhiloxKey(options.Seed, RandomStreams.SampleStart, (ulong)start * (ulong)d));
                CaptureFrame(frameSteps, 0, x, frames, start, d);
                for (int s = 0; s < timesteps.Length; s++)
                {
                    int t = timesteps[s];
                    var eps = model.Forward(tape, x, tAll.View.SubView(s * n, n), default);
                    var key = new PhiloxKey(options.Seed, RandomStreams.SampleSteps, ((ulong)s * (ulong)count + (ulong)start) * (ulong)d);
                    var step = sampler.Step(Schedule, t, s + 1 < timesteps.Length ? timesteps[s + 1] : -1);
                    kernels.ReverseStep(x.View, eps.View, step, key, next.View);
                    tape.Clear();
                    (x, next) = (next, x);
                    CaptureFrame(frameSteps, s + 1, x, frames, start, d);
                    progress?.Invoke(start * timesteps.Length + (s + 1) * n, count * timesteps.Length);
                }
                var result = x.ToArray();
                // The final x_0 is clipped to [−1, 1], as the seed's sampler returns torch.clip(x_0, −1, 1).
                for (int i = 0; i < result.Length; i++) result[i] = Math.Clamp(result[i], -1f, 1f);
                result.CopyTo(images, start * d);
            }
            finally
            {
                x.Dispose();
                next.Dispose();
            }
        }
        return new SampleResult(images, frames, count, c, h, w);
    }

    /// <summary>
    /// The variational bound L_VLB = L_T + Σ_{t=2..T} L_{t−1} + L_0 of each image in bits per dimension
    /// (DESIGN.md §3; DDPM paper eq. 5 and 13), averaged over <paramref name="count"/> images:
    /// L_T = KL(q(x_T|x_0) ‖ N(0, I)); L_{t−1} = KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) with x_t drawn from
    /// q(x_t|x_0); L_0 = −log p_θ(x_0|x_1) under the discretized Gaussian decoder. Every one of the T terms is
    /// evaluated for the whole batch: T network evaluations per batch.
    /// </summary>
    public BpdResult Bpd(UNet model, ReadOnlySpan<float> images, int count, ulong seed,
                         VarianceKind variance = VarianceKind.Large, Action<int, int>? progress = null, int batchSize = 64)
    {
        var (c, h, w) = ImageShape(model, images, count);
        int d = c * h * w;
        float toBits = (float)(1.0 / (d * Math.Log(2)));
        double prior = 0, terms = 0, decoder = 0;
        var tape = new Tape(device);
        using var noGrad = tape.NoGrad();
        int batches = (count + batchSize - 1) / batchSize, done = 0;
        for (int start = 0; start < count; start += batchSize)
        {
            int n = Math.Min(batchSize, count - start);
            using var x0 = Tensor.FromArray(device, images.Slice(start * d, n * d), n, c, h, w);
            using var priorBits = device.Pool.Rent<float>(n);
            using var termBits = device.Pool.Rent<float>(n);
            using var decoderBits = device.Pool.Rent<float>(n);
            using var tAll = UploadTimesteps(Enumerable.Range(0, Timesteps).ToArray(), n);
            termBits.Clear();
            kernels.PriorKL(x0.View, Schedule.AlphasBar[^1], priorBits.View, n, d, toBits);
            for (int step = Timesteps - 1; step >= 0; step--)
            {
                var t = tAll.View.SubView(step * n, n);
                var (xt, _) = Noised(tape, x0, t, new PhiloxKey(seed, RandomStreams.Evaluation, ((ulong)step * (ulong)count + (ulong)start) * (ulong)d));
                var predicted = model.Forward(tape, xt, t, default);
                // μ_θ(x_t, t): the DDPM step without noise or clipping; log σ² of p_θ and of q (DESIGN.md §3).
                var modelMean = tape.NewTensor(x0.Shape);
                kernels.ReverseStep(xt.View, predicted.View, DdpmSampler.Coefficients(Schedule, step, clip: false, sigma: 0), default, modelMean.View);
                float modelLogVariance = (float)DdpmSampler.LogVariance(Schedule, variance, step);
                if (step == 0)
                    kernels.DiscretizedGaussianNll(x0.View, modelMean.View, modelLogVariance, decoderBits.View, n, d, toBits);
                else
                {
                    // μ̃_t(x_t, x_0) = coef_x0·x_0 + coef_xt·x_t, the mean of q(x_{t−1} | x_t, x_0).
                    var trueMean = tape.NewTensor(x0.Shape);
                    elementwise.Binary(new WeightedSumOp((float)Schedule.PosteriorMeanCoefX0[step], (float)Schedule.PosteriorMeanCoefXt[step]), x0.View, xt.View, trueMean.View);
                    kernels.GaussianKL(trueMean.View, (float)Schedule.PosteriorLogVariancesClipped[step], modelMean.View, modelLogVariance,
                                       termBits.View, n, d, toBits, accumulate: true);
                }
                tape.Clear();
                progress?.Invoke(done * Timesteps + (Timesteps - step), batches * Timesteps);
            }
            prior += priorBits.ToArray().Sum(v => (double)v);
            terms += termBits.ToArray().Sum(v => (double)v);
            decoder += decoderBits.ToArray().Sum(v => (double)v);
            done++;
        }
        return new BpdResult((prior + terms + decoder) / count, prior / count, terms / count, decoder / count, count);
    }

    /// <summary>
    /// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ε from <paramref name="key"/> (one fused kernel), both tape-owned.
    /// </summary>
    private (Tensor Xt, Tensor Eps) Noised(Tape tape, Tensor x0, ArrayView<int> t, PhiloxKey key)
    {
        int n = x0.Dim(0);
        var eps = tape.NewTensor(x0.Shape);
        var xt = tape.NewTensor(x0.Shape);
        kernels.Noise(x0.View, t, sqrtAlphasBar.View, sqrtOneMinusAlphasBar.View, key, eps.View, xt.View, n, x0.Length / n);
        return (xt, eps);
    }

    /// <summary>
    /// A pooled [steps.Length × n] table on the device whose row s is steps[s] n times (the timestep of every
    /// image at step s), uploaded once, so the loop over steps makes no host–device wait (issue 9).
    /// </summary>
    private DeviceBuffer<int> UploadTimesteps(IReadOnlyList<int> steps, int n)
    {
        var host = new int[steps.Count * n];
        for (int s = 0; s < steps.Count; s++) Array.Fill(host, steps[s], s * n, n);
        var table = device.Pool.Rent<int>(host.Length);
        table.CopyFrom(host);
        return table;
    }

    private static List<int> FrameSteps(int stepCount, int frameCount)
    {
        var list = new List<int>();
        if (frameCount <= 0) return list;
        if (frameCount == 1) { list.Add(stepCount); return list; }
        for (int f = 0; f < frameCount; f++)
        {
            int s = (int)Math.Round(f * (double)stepCount / (frameCount - 1));
            if (list.Count == 0 || list[^1] != s) list.Add(s);
        }
        return list;
    }

    private static void CaptureFrame(List<int> frameSteps, int done, Tensor x, List<float[]> frames, int start, int d)
    {
        int index = frameSteps.IndexOf(done);
        if (index < 0) return;
        var values = x.ToArray();
        for (int i = 0; i < values.Length; i++) values[i] = Math.Clamp(values[i], -1f, 1f);
        values.CopyTo(frames[index], start * d);
    }

    private static (int C, int H, int W) ImageShape(UNet model, ReadOnlySpan<float> images, int count)
    {
        var config = model.Config;
        int c = config.InChannels, h = config.ImageSize, w = config.ImageSize;
        if (count <= 0) throw new ArgumentException($"the number of images must be positive, got {count}");
        if (images.Length < count * c * h * w)
            throw new ArgumentException($"expected {count} images of {c}×{h}×{w}, got {images.Length} values");
        return (c, h, w);
    }

    /// <summary>Returns the uploaded tables to the pool.</summary>
    public void Dispose()
    {
        sqrtAlphasBar.Dispose();
        sqrtOneMinusAlphasBar.Dispose();
    }
}
