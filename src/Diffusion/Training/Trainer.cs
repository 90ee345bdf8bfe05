using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Diffusion.Distributed;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion;

/// <summary>Hyper-parameters of a training run (DDPM paper defaults where it gives them).</summary>
public sealed record TrainingOptions
{
    /// <summary>Images per step (the global batch: data-parallel ranks take equal shards of it).</summary>
    public int BatchSize { get; init; } = 64;
    /// <summary>Adam's learning rate after warm-up (DDPM: 2e-4).</summary>
    public double LearningRate { get; init; } = 2e-4;
    /// <summary>Steps of linear learning-rate warm-up from 0 (DDPM: 5000; shorter suits short runs).</summary>
    public int WarmupSteps { get; init; } = 1000;
    /// <summary>Global gradient-norm clip (DDPM: 1.0).</summary>
    public float GradClip { get; init; } = 1f;
    /// <summary>EMA decay of the weights (DDPM: 0.9999).</summary>
    public double EmaDecay { get; init; } = 0.9999;
    /// <summary>Decoupled (AdamW) weight decay; 0 = plain Adam as in DDPM.</summary>
    public double WeightDecay { get; init; }
    /// <summary>Seed of every random number of the run (DESIGN.md §2).</summary>
    public ulong Seed { get; init; }
    /// <summary>Random horizontal flips of the training images.</summary>
    public bool RandomFlip { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad option.</summary>
    public TrainingOptions Validate()
    {
        if (BatchSize <= 0) throw new ArgumentException($"batch size must be positive, got {BatchSize}");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentException($"learning rate must be positive, got {LearningRate}");
        if (WarmupSteps < 0) throw new ArgumentException($"warm-up steps must be ≥ 0, got {WarmupSteps}");
        if (!(GradClip > 0)) throw new ArgumentException($"gradient clip must be positive, got {GradClip}");
        if (!(EmaDecay >= 0 && EmaDecay < 1)) throw new ArgumentException($"EMA decay must be in [0, 1), got {EmaDecay}");
        if (!(WeightDecay >= 0)) throw new ArgumentException($"weight decay must be ≥ 0, got {WeightDecay}");
        return this;
    }
}

/// <summary>What one training step did.</summary>
public readonly record struct StepResult(long Step, float Loss, float GradNorm, double LearningRate);

/// <summary>
/// The training loop's step (DESIGN.md §3, Algorithm 1 plus the DDPM paper's optimisation): L_simple on a
/// batch, backward through the tape, global-norm clipping fused into Adam, an EMA of the weights.
/// Everything stays on the device; the step reads back two floats (loss and gradient norm) at its end.
/// Buffers (Adam moments, EMA weights, scratch) are allocated once; a steady-state step allocates nothing.
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly ComputeDevice device;
    private readonly Tape tape;
    private readonly ElementwiseKernels elementwise;
    private readonly ParameterOptimizer optimizer;
    private readonly DeviceBuffer<float> lossValue;
    // The losses of the steps not read back yet: slot 0 gets the last step's gradient norm at a read-back,
    // slots 1.. the losses (single process; distributed steps know their global loss on the host already).
    private readonly DeviceBuffer<float> lossLog;
    private readonly float[] lossLogHost = new float[1 + LossLogCapacity];
    private readonly List<float> unreadLosses = new();
    private int lossesOnDevice;
    private Tensor? batchTensor;
    private ICommunicator communicator = SingleProcess.Instance;
    private GradientExchange? exchange;
    private ArrayView<float>[] exchangeViews = [];

    /// <summary>A fresh run: zero moments, EMA weights equal to the model's.</summary>
    public Trainer(UNet model, GaussianDiffusion diffusion, TrainingOptions options)
    {
        Options = options.Validate();
        Model = model;
        Diffusion = diffusion;
        device = model.Device;
        tape = new Tape(device) { Training = true };
        elementwise = device.Kernels<ElementwiseKernels>();
        optimizer = new ParameterOptimizer(model.Parameters, new AdamSettings { WeightDecay = (float)options.WeightDecay }, options.GradClip, withEma: true);
        lossValue = device.Pool.Rent<float>(1);
        lossLog = device.Pool.Rent<float>(1 + LossLogCapacity);
    }

    /// <summary>The network being trained.</summary>
    public UNet Model { get; }

    /// <summary>The diffusion process (schedule, loss).</summary>
    public GaussianDiffusion Diffusion { get; }

    /// <summary>The run's hyper-parameters.</summary>
    public TrainingOptions Options { get; }

    /// <summary>The ranks this trainer shares its steps with (<see cref="SingleProcess"/> unless <see cref="Distribute"/> was called).</summary>
    public ICommunicator Communicator => communicator;

    /// <summary>Images this rank trains on per step: BatchSize / ranks.</summary>
    public int LocalBatchSize => Options.BatchSize / communicator.Size;

    /// <summary>Time spent moving the gradients and summing them across ranks, over all steps.</summary>
    public TimeSpan AllReduceTime => exchange?.Time ?? TimeSpan.Zero;

    /// <summary>How gradients travel between ranks (<see cref="TransferPaths.Choose"/>); null before <see cref="Distribute"/> with more than one rank.</summary>
    public TransferPath? TransferPath => exchange?.Path;

    /// <summary>
    /// Makes this trainer one of <paramref name="ranks"/>' data-parallel replicas (docs/distributed.md): rank 0's
    /// whole state (weights, Adam moments, EMA weights, step) is broadcast to every rank, so the replicas start
    /// equal; every later step trains on this rank's shard of the global batch and sums the gradients across
    /// ranks with one all-reduce. Every rank must call it at the same point. Throws <see cref="ArgumentException"/>
    /// when the ranks do not divide the batch.
    /// </summary>
    public void Distribute(ICommunicator ranks)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        if (Options.BatchSize % ranks.Size != 0)
            throw new ArgumentException($"--batch {Options.BatchSize} cannot be split evenly over {ranks.Size} ranks; choose a multiple of {ranks.Size}");
        communicator = ranks;
        if (ranks.Size == 1) return;
        int total = Model.Parameters.Length;
        // Room for the flat gradient buffer, then this rank's loss.
        exchange?.Dispose();
        exchange = new GradientExchange(device, ranks, checked(total + 1), TransferPaths.Choose(device.Kind, ranks.CudaAware));
        exchange.Broadcast([Model.Parameters.Values.View]);
        foreach (var state in optimizer.StateViews) exchange.Broadcast([state]);
        exchangeViews = [Model.Parameters.Gradients.View, lossValue.View];
        Span<double> step = [Step];
        ranks.Broadcast(step);
        Step = (long)step[0];
    }

    /// <summary>Number of completed steps.</summary>
    public long Step { get; private set; }

    /// <summary>Learning rate of step number <paramref name="step"/> (0-based): linear warm-up, then constant.</summary>
    public double LearningRateAt(long step) =>
        Options.WarmupSteps > 0 ? Options.LearningRate * Math.Min(1.0, (step + 1) / (double)Options.WarmupSteps) : Options.LearningRate;

    /// <summary>
    /// EMA decay used after step number <paramref name="step"/>: min(decay, (1 + step)/(10 + step)). The warm-up
    /// of the decay lets the average follow the weights early on, so short runs sample sensibly from EMA
    /// weights too; after a few thousand steps it is the configured decay.
    /// </summary>
    public double EmaDecayAt(long step) => Math.Min(Options.EmaDecay, (1.0 + step) / (10.0 + step));

    /// <summary>
    /// One optimisation step on <paramref name="batch"/> ([B, C, H, W] in [−1, 1], B = the global batch size).
    /// Distributed, this rank trains on its shard (images rank·B/N ..), the gradients are summed across ranks
    /// and divided by N — the gradient of the mean loss over the whole batch, so the update is the one a single
    /// process would make on it — and the loss returned is the global mean.
    /// </summary>
    public StepResult TrainStep(ReadOnlySpan<float> batch) => TrainStep(batch, readBack: true);

    /// <summary>
    /// <see cref="TrainStep(ReadOnlySpan{float})"/>; with <paramref name="readBack"/> false the step does not wait
    /// for the device at its end: the loss and the gradient norm stay on the device and the result carries NaN
    /// for both (a step that logs nothing; its only host–device synchronisation is the batch upload).
    /// </summary>
    public StepResult TrainStep(ReadOnlySpan<float> batch, bool readBack)
    {
        var config = Model.Config;
        int b = Options.BatchSize, c = config.InChannels, s = config.ImageSize;
        if (batch.Length != b * c * s * s)
            throw new ArgumentException($"a batch must hold {b} images of {c}×{s}×{s} ({b * c * s * s} values), got {batch.Length}");
        int local = LocalBatchSize, first = communicator.Rank * local, image = c * s * s;
        batchTensor ??= Tensor.Create(device, local, c, s, s);
        batchTensor.CopyFrom(batch.Slice(first * image, local * image));

        Model.ZeroGrad();
        var loss = Diffusion.TrainingLoss(tape, Model, batchTensor, Options.Seed, Step, b, first);
        bool single = communicator.Size == 1;
        elementwise.Copy(loss.View, single ? lossLog.View.SubView(1 + lossesOnDevice, 1) : lossValue.View);
        tape.Backward(loss);
        float? globalLoss = communicator.Size > 1 ? AllReduceGradients() : null;

        // Clip the global gradient norm to GradClip (scale computed on the device, fused into Adam), Adam, EMA.
        double lr = LearningRateAt(Step);
        optimizer.Step(Step + 1, lr, (float)EmaDecayAt(Step));
        Step++;
        if (single) lossesOnDevice++;
        else unreadLosses.Add(globalLoss!.Value);
        if (lossesOnDevice == LossLogCapacity) MoveLossesToHost(); // a long stretch without read-backs: one wait per 256 steps
        if (!readBack) return new StepResult(Step, globalLoss ?? float.NaN, float.NaN, lr);
        var (losses, norm) = ReadBack();
        return new StepResult(Step, losses[^1], norm, lr);
    }

    /// <summary>Steps whose loss the device holds and <see cref="ReadBack"/> has not returned yet (at most this many).</summary>
    public const int LossLogCapacity = 256;

    /// <summary>
    /// The losses of every step since the previous read-back, oldest first (the last is the latest step's), and the
    /// latest step's global gradient norm before clipping: one wait for the device. A training loop calls it on
    /// the steps it logs, prints or saves, so the others never wait (issue 9).
    /// </summary>
    public (IReadOnlyList<float> Losses, float GradNorm) ReadBack()
    {
        elementwise.Copy(optimizer.NormAndScale.SubView(0, 1), lossLog.View.SubView(0, 1));
        var host = lossLogHost.AsSpan(0, 1 + lossesOnDevice);
        lossLog.Slice(0, host.Length).CopyTo(host);
        foreach (var loss in host[1..]) unreadLosses.Add(loss);
        lossesOnDevice = 0;
        float[] losses = [.. unreadLosses];
        unreadLosses.Clear();
        return (losses, host[0]);
    }

    private void MoveLossesToHost()
    {
        var host = lossLogHost.AsSpan(1, lossesOnDevice);
        lossLog.Slice(1, lossesOnDevice).CopyTo(host);
        foreach (var loss in host) unreadLosses.Add(loss);
        lossesOnDevice = 0;
    }

    /// <summary>
    /// Sums every gradient and the loss across ranks in ONE all-reduce of a flat buffer (gradients in parameter
    /// order, then the loss) and divides by the number of ranks; returns the global mean loss. Staged through
    /// host memory, or direct on a CUDA-aware MPI (<see cref="GradientExchange"/>).
    /// </summary>
    private float AllReduceGradients() => exchange!.Average(exchangeViews);

    /// <summary>Copies the EMA weights into <paramref name="target"/> (a model of the same config), for sampling.</summary>
    public void CopyEmaInto(UNet target)
    {
        CheckSameConfig(target);
        elementwise.Copy(optimizer.Ema!.View, target.Parameters.Values.View);
    }

    /// <summary>Adam's first moments, EMA weights etc., by role, for checkpoints (same order as the parameters).</summary>
    internal IReadOnlyList<DeviceBuffer<float>> FirstMoments => optimizer.FirstMoments;
    internal IReadOnlyList<DeviceBuffer<float>> SecondMoments => optimizer.SecondMoments;
    internal IReadOnlyList<DeviceBuffer<float>> EmaWeights => optimizer.EmaWeights;

    /// <summary>Restores the step counter (checkpoint resume).</summary>
    internal void RestoreStep(long step) => Step = step;

    private void CheckSameConfig(UNet target)
    {
        if (!target.Config.Equals(Model.Config))
            throw new ArgumentException($"EMA weights belong to a model with config {Model.Config}, not {target.Config}");
    }

    /// <summary>Returns every buffer to the pool.</summary>
    public void Dispose()
    {
        tape.Clear();
        optimizer.Dispose();
        lossValue.Dispose();
        lossLog.Dispose();
        exchange?.Dispose();
        batchTensor?.Dispose();
    }
}
