using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Performance;

/// <summary>
/// Issue 9, point 3, for every preset: a steady-state train step and a sampling step allocate no device memory
/// (the pool's allocation counter does not move after warm-up), and a train step that logs nothing waits for the
/// device at most once (the batch upload; the loss and the gradient norm stay on the device). The presets run at
/// reduced sizes so the CPU accelerator gets through them fast: tiny and small at 8×8 (their levels and the
/// attention at the lowest level are the same at any size), ddpm-cifar10 at 16×16 with ch 32 (its levels,
/// ResBlocks, attention and dropout as in the paper; only the widths shrink). Pooling, launches and waits depend
/// on the structure, not on the sizes.
/// </summary>
[TestFixture]
public sealed class SteadyStateTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    public static IEnumerable<TestCaseData> Presets()
    {
        yield return new TestCaseData(UNetConfig.Tiny(8)).SetName("SteadyState(tiny at 8x8)");
        yield return new TestCaseData(UNetConfig.Small(8)).SetName("SteadyState(small at 8x8)");
        yield return new TestCaseData(UNetConfig.DdpmCifar10(16) with { Channels = 32 }).SetName("SteadyState(ddpm-cifar10 at 16x16, ch 32)");
    }

    [TestCaseSource(nameof(Presets))]
    public void TrainAndSamplingStepsAllocateNothingAndALogFreeStepWaitsAtMostOnce(UNetConfig config)
    {
        const int batch = 2;
        var pool = Device.Pool;
        var counters = Device.Counters;
        using var model = new UNet(Device, config, seed: 5);
        var diffusion = new GaussianDiffusion(Device, NoiseSchedule.Linear(20, 1e-3, 0.2));
        var images = TestData.Uniform(batch * config.InChannels * config.ImageSize * config.ImageSize, 9);
        using (var trainer = new Trainer(model, diffusion, new TrainingOptions { BatchSize = batch, WarmupSteps = 2, Seed = 4 }))
        {
            trainer.TrainStep(images);                        // compiles every kernel, fills the pool
            trainer.TrainStep(images, readBack: false);
            long allocations = pool.AllocationCount;
            var before = counters.Snapshot();
            var quiet = trainer.TrainStep(images, readBack: false);
            var quietCount = counters.Snapshot() - before;
            Assert.That(pool.AllocationCount, Is.EqualTo(allocations), "a steady-state train step allocated device memory");
            Assert.That(quietCount.Synchronizations, Is.LessThanOrEqualTo(1), "a train step that logs nothing waits for the device only for the batch upload");
            Assert.That(float.IsNaN(quiet.Loss) && float.IsNaN(quiet.GradNorm), "nothing was read back");

            // The losses of the quiet steps wait on the device for the next read-back, in step order.
            var reference = trainer.ReadBack();
            Assert.That(reference.Losses, Has.Count.EqualTo(2), "the two quiet steps since the first (reading) one");
            Assert.That(reference.Losses.All(float.IsFinite) && reference.GradNorm > 0, $"losses {string.Join(", ", reference.Losses)}, norm {reference.GradNorm}");

            before = counters.Snapshot();
            var logged = trainer.TrainStep(images);
            var loggedCount = counters.Snapshot() - before;
            Assert.That(pool.AllocationCount, Is.EqualTo(allocations), "a logging train step allocated device memory");
            Assert.That(float.IsFinite(logged.Loss) && logged.GradNorm > 0, $"a logging step reads loss and norm back, got {logged}");
            Assert.That(loggedCount.Launches - quietCount.Launches, Is.EqualTo(1), "logging costs one launch (the norm next to the losses)");
            Assert.That(loggedCount.Synchronizations - quietCount.Synchronizations, Is.EqualTo(1), "and one read-back of the losses and the norm");
        }

        var options = new SampleOptions { Count = batch, Sampler = SamplerKind.Ddim, Steps = 3, Seed = 2 };
        diffusion.Sample(model, options);
        long sampled = pool.AllocationCount;
        diffusion.Sample(model, options);
        Assert.That(pool.AllocationCount, Is.EqualTo(sampled), "a steady-state sampling run allocated device memory");
        diffusion.Dispose();
    }
}
