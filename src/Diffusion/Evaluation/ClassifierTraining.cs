using System.Text.Json;
using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion.Evaluation;

/// <summary>Hyper-parameters of the evaluation classifier's training.</summary>
public sealed record ClassifierTrainingOptions
{
    /// <summary>Images per step.</summary>
    public int BatchSize { get; init; } = 64;
    /// <summary>Optimisation steps.</summary>
    public int Steps { get; init; } = 2000;
    /// <summary>Adam's peak learning rate.</summary>
    public double LearningRate { get; init; } = 2e-3;
    /// <summary>Steps of linear warm-up; then a cosine decay to 0 at <see cref="Steps"/>.</summary>
    public int WarmupSteps { get; init; } = 20;
    /// <summary>Global gradient-norm clip.</summary>
    public float GradClip { get; init; } = 5f;
    /// <summary>Random horizontal flips of the training images.</summary>
    public bool RandomFlip { get; init; } = true;
    /// <summary>Seed of the initialisation, the data order and the flips.</summary>
    public ulong Seed { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad option.</summary>
    public ClassifierTrainingOptions Validate()
    {
        if (BatchSize <= 0) throw new ArgumentException($"batch size must be positive, got {BatchSize}");
        if (Steps <= 0) throw new ArgumentException($"steps must be positive, got {Steps}");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentException($"learning rate must be positive, got {LearningRate}");
        if (WarmupSteps < 0) throw new ArgumentException($"warm-up steps must be ≥ 0, got {WarmupSteps}");
        if (!(GradClip > 0)) throw new ArgumentException($"gradient clip must be positive, got {GradClip}");
        return this;
    }

    /// <summary>Learning rate of 0-based step <paramref name="step"/>: linear warm-up, then ½(1 + cos(π·progress)) decay.</summary>
    public double LearningRateAt(long step)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        double progress = Steps > WarmupSteps ? (double)(step - WarmupSteps) / (Steps - WarmupSteps) : 1.0;
        return LearningRate * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, progress)));
    }
}

/// <summary>
/// Trains a <see cref="Classifier"/> with softmax cross-entropy and Adam (global-norm clipping fused in) on
/// shuffled batches of a <see cref="LabelledImages"/> set. Everything is seeded — the initialisation, the
/// epoch permutations and flips (<see cref="BatchSampler"/>) — and every kernel is deterministic, so the same
/// options on the same accelerator give the same bytes.
/// </summary>
public sealed class ClassifierTrainer : IDisposable
{
    private readonly ComputeDevice device;
    private readonly LabelledImages data;
    private readonly BatchSampler sampler;
    private readonly Tape tape;
    private readonly ParameterOptimizer optimizer;
    private readonly DeviceBuffer<int> labelBuffer;
    private readonly Tensor batchTensor;
    private readonly float[] batch;
    private readonly int[] indices;
    private readonly int[] labels;

    /// <summary>A fresh classifier of <paramref name="config"/> initialised from the options' seed.</summary>
    public ClassifierTrainer(ComputeDevice device, ClassifierConfig config, LabelledImages data, ClassifierTrainingOptions options)
    {
        Options = options.Validate();
        var images = data.Images;
        if (images.Channels != config.InChannels || images.Height != config.ImageSize || images.Width != config.ImageSize)
            throw new DataException($"{images.Source}: images are {images.Channels}x{images.Height}x{images.Width}, the classifier expects {config.InChannels}x{config.ImageSize}x{config.ImageSize}");
        if (data.Classes > config.Classes)
            throw new DataException($"{images.Source}: has {data.Classes} classes, the classifier {config.Classes}");
        this.device = device;
        this.data = data;
        Model = new Classifier(device, config, options.Seed);
        sampler = new BatchSampler(images, options.BatchSize, options.Seed, options.RandomFlip);
        tape = new Tape(device) { Training = true };
        optimizer = new ParameterOptimizer(Model.Parameters, new AdamSettings(), options.GradClip, withEma: false);
        labelBuffer = device.Pool.Rent<int>(options.BatchSize);
        batchTensor = Tensor.Create(device, options.BatchSize, config.InChannels, config.ImageSize, config.ImageSize);
        batch = new float[batchTensor.Length];
        indices = new int[options.BatchSize];
        labels = new int[options.BatchSize];
    }

    /// <summary>The classifier being trained (owned by the trainer until <see cref="TakeModel"/>).</summary>
    public Classifier Model { get; private set; }

    /// <summary>The options.</summary>
    public ClassifierTrainingOptions Options { get; }

    /// <summary>Completed steps.</summary>
    public long Step { get; private set; }

    /// <summary>One step on the next batch; returns its mean cross-entropy.</summary>
    public float TrainStep()
    {
        sampler.Next(batch, indices);
        for (int i = 0; i < labels.Length; i++) labels[i] = data.Labels[indices[i]];
        batchTensor.CopyFrom(batch);
        labelBuffer.CopyFrom(labels);
        Model.ZeroGrad();
        var loss = tape.SoftmaxCrossEntropy(Model.Forward(tape, batchTensor), labelBuffer.View);
        float value = loss.ToScalar();
        tape.Backward(loss);
        optimizer.Step(Step + 1, Options.LearningRateAt(Step));
        Step++;
        return value;
    }

    /// <summary>Hands the trained classifier to the caller, who disposes it.</summary>
    public Classifier TakeModel()
    {
        var m = Model;
        Model = null!;
        return m;
    }

    /// <summary>Returns every buffer (and the model, unless taken) to the pool.</summary>
    public void Dispose()
    {
        tape.Clear();
        optimizer.Dispose();
        labelBuffer.Dispose();
        batchTensor.Dispose();
        Model?.Dispose();
    }
}
