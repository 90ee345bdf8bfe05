using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion;

/// <summary>
/// What one forward pass, one train step and one sampling step cost a device in stream operations and host
/// waits (issue 9: a GPU has no CUDA graphs under ILGPU, so every launch costs microseconds however small).
/// </summary>
/// <param name="Forward">One no-gradient forward pass of the U-Net (the input already on the device).</param>
/// <param name="TrainStep">One <see cref="Trainer.TrainStep(ReadOnlySpan{float}, bool)"/> that reads nothing back (a step that logs nothing).</param>
/// <param name="SamplingStep">One step of the reverse process: a forward pass and the reverse-step kernel (the difference of a 2- and a 1-step DDIM sampling).</param>
public sealed record StepCounts(DeviceCount Forward, DeviceCount TrainStep, DeviceCount SamplingStep)
{
    /// <summary>
    /// Counts by running each once on <paramref name="device"/> with a batch of <paramref name="batch"/> images.
    /// Every kernel covers the whole batch in one launch, but not every count is independent of the batch: a
    /// reduction over more than <c>ReduceKernels.SegmentLength</c> values takes two launches instead of one (the
    /// loss over a batch of 64 does, over one image not), so the counts are those of this batch. Compiling a kernel
    /// is not a launch, so no warm-up run is needed. The model is made and freed here.
    /// </summary>
    public static StepCounts Measure(ComputeDevice device, UNetConfig config, int batch = 1)
    {
        if (batch < 1) throw new ArgumentException($"batch must be positive, got {batch}");
        var counters = device.Counters;
        var schedule = NoiseSchedule.Linear(1000, 1e-4, 0.02);
        using var model = new UNet(device, config, seed: 1);
        using var diffusion = new GaussianDiffusion(device, schedule);
        int c = config.InChannels, s = config.ImageSize;

        // Forward: inputs uploaded first, so only the pass itself is counted.
        var tape = new Tape(device) { Training = false };
        DeviceCount forward;
        using (var x = Tensor.Zeros(device, batch, c, s, s))
        using (var t = device.Pool.Rent<int>(batch))
        using (tape.NoGrad())
        {
            t.CopyFrom(new int[batch]);
            var before = counters.Snapshot();
            model.Forward(tape, x, t.View, default);
            forward = counters.Snapshot() - before;
            tape.Clear();
        }

        // Train step: one that logs nothing.
        DeviceCount train;
        var images = new float[batch * c * s * s];
        using (var trainer = new Trainer(model, diffusion, new TrainingOptions { BatchSize = batch, WarmupSteps = 0 }))
        {
            var before = counters.Snapshot();
            trainer.TrainStep(images, readBack: false);
            train = counters.Snapshot() - before;
        }

        // Sampling step: a 2-step sampling minus a 1-step one (same start, same end: the difference is one step).
        var one = new SampleOptions { Count = batch, Sampler = SamplerKind.Ddim, Steps = 1, Seed = 1 };
        var start = counters.Snapshot();
        diffusion.Sample(model, one);
        var middle = counters.Snapshot();
        diffusion.Sample(model, one with { Steps = 2 });
        var sampling = (counters.Snapshot() - middle) - (middle - start);
        return new StepCounts(forward, train, sampling);
    }

    /// <summary>
    /// <see cref="Measure"/> with every launch counted and none run (<see cref="ComputeDevice.CountsOnly"/>): the same
    /// counts in moments. With <paramref name="gpuVariants"/> the CPU accelerator chooses the kernels a GPU runs
    /// (<see cref="ComputeDevice.ChooseGpuVariants"/>), so these are the launches a GPU would issue, counted without one.
    /// </summary>
    public static StepCounts Count(ComputeDevice device, UNetConfig config, int batch, bool gpuVariants)
    {
        bool counting = device.CountsOnly, gpu = device.ChooseGpuVariants;
        device.CountsOnly = true;
        device.ChooseGpuVariants = gpuVariants;
        try { return Measure(device, config, batch); }
        finally
        {
            device.CountsOnly = counting;
            device.ChooseGpuVariants = gpu;
        }
    }
}
