using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Diffusion;

/// <summary>
/// The DDPM end to end on the CPU accelerator (DESIGN.md §6): a `tiny` U-Net learns four 8×8 shapes, its
/// loss falls clearly, and DDPM and DDIM samples land near the training images; sampling is bit-repeatable.
/// One model is trained once for the whole fixture.
/// </summary>
[TestFixture]
public sealed class DiffusionEndToEndTests
{
    // T = 100 with the linear schedule's end points scaled by 1000/T keeps ᾱ_T ≈ 5e−5 (x_T is noise).
    private static NoiseSchedule TestSchedule() => NoiseSchedule.Linear(100, 1e-3, 0.2);
    private const int Steps = 250;
    private const int Batch = 16;

    private UNet model = null!;
    private GaussianDiffusion diffusion = null!;
    private readonly List<float> losses = new();

    [OneTimeSetUp]
    public void Train()
    {
        var device = TestDevice.Cpu;
        model = new UNet(device, UNetConfig.Tiny(SyntheticImages.Size, 1), seed: 1);
        diffusion = new GaussianDiffusion(device, TestSchedule());
        using var trainer = new Trainer(model, diffusion, new TrainingOptions
        {
            BatchSize = Batch, LearningRate = 2e-3, WarmupSteps = 20, Seed = 7, EmaDecay = 0.99,
        });
        var batch = SyntheticImages.Batch(Batch);
        for (int i = 0; i < Steps; i++) losses.Add(trainer.TrainStep(batch).Loss);
        trainer.CopyEmaInto(model);
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        diffusion.Dispose();
        model.Dispose();
    }

    [Test]
    public void LossFallsClearly()
    {
        double first = losses.Take(20).Average(), last = losses.TakeLast(50).Average();
        TestContext.Out.WriteLine($"loss: first 20 steps {first:F4}, last 50 steps {last:F4}");
        Assert.That(losses.All(float.IsFinite), "every loss is finite");
        Assert.That(last, Is.LessThan(0.5 * first), "the loss at the end is less than half the loss at the start");
    }

    [Test]
    public void DdpmSamplesLandNearTheTrainingImages()
    {
        var result = diffusion.Sample(model, new SampleOptions { Count = 16, Seed = 3 });
        var noise = FreshNoise(16, 99);
        double samples = SyntheticImages.MeanNearestDistance(result.Images, 16);
        double baseline = SyntheticImages.MeanNearestDistance(noise, 16);
        TestContext.Out.WriteLine($"DDPM: mean nearest L2 {samples:F3} vs fresh noise {baseline:F3}");
        Assert.That(samples, Is.LessThan(0.5 * baseline));
    }

    [Test]
    public void DdimWithFiftyStepsLandsNearTheTrainingImagesToo()
    {
        var result = diffusion.Sample(model, new SampleOptions { Count = 16, Seed = 4, Sampler = SamplerKind.Ddim, Steps = 50 });
        double samples = SyntheticImages.MeanNearestDistance(result.Images, 16);
        double baseline = SyntheticImages.MeanNearestDistance(FreshNoise(16, 98), 16);
        TestContext.Out.WriteLine($"DDIM-50: mean nearest L2 {samples:F3} vs fresh noise {baseline:F3}");
        Assert.That(samples, Is.LessThan(0.5 * baseline));
    }

    [Test]
    public void SameSeedGivesBitIdenticalSamples()
    {
        var options = new SampleOptions { Count = 3, Seed = 11, Sampler = SamplerKind.Ddim, Steps = 10, Eta = 1 };
        var a = diffusion.Sample(model, options);
        var b = diffusion.Sample(model, options);
        Check.BitIdentical(a.Images, b.Images, "two DDIM runs with one seed");
        var c = diffusion.Sample(model, options with { Seed = 12 });
        Assert.That(c.Images, Is.Not.EqualTo(a.Images), "another seed gives other images");
        var ddpm1 = diffusion.Sample(model, new SampleOptions { Count = 1, Seed = 5, FrameCount = 5 });
        var ddpm2 = diffusion.Sample(model, new SampleOptions { Count = 1, Seed = 5 });
        Check.BitIdentical(ddpm1.Images, ddpm2.Images, "two DDPM runs with one seed (frames or not)");
        Assert.That(ddpm1.Frames, Has.Count.EqualTo(5), "frames kept");
        Check.BitIdentical(ddpm1.Frames[^1], ddpm1.Images, "the last frame is x_0");
    }

    [Test]
    public void BatchSizeDoesNotChangeTheSamples()
    {
        var whole = diffusion.Sample(model, new SampleOptions { Count = 4, Seed = 8, Sampler = SamplerKind.Ddim, Steps = 5 });
        var split = diffusion.Sample(model, new SampleOptions { Count = 4, Seed = 8, Sampler = SamplerKind.Ddim, Steps = 5, BatchSize = 3 });
        Check.Close(split.Images, whole.Images, 1e-5, 1e-5, "batched 3+1 vs 4 at once");
    }

    [Test]
    public void BitsPerDimensionIsFiniteAndItsTermsAddUp()
    {
        var images = SyntheticImages.Batch(4);
        var bound = diffusion.Bpd(model, images, 4, seed: 1);
        TestContext.Out.WriteLine($"bpd {bound.Total:F3} = L_T {bound.PriorTerm:F5} + ΣL_t {bound.DiffusionTerms:F3} + L_0 {bound.DecoderTerm:F3}");
        Assert.That(double.IsFinite(bound.Total) && bound.Total > 0);
        Assert.That(bound.Total, Is.EqualTo(bound.PriorTerm + bound.DiffusionTerms + bound.DecoderTerm).Within(1e-9));
        Assert.That(bound.PriorTerm, Is.LessThan(1e-3), "x_T carries almost nothing of x_0 under this schedule");
        Assert.That(bound.DiffusionTerms, Is.GreaterThan(0));
        double loss = diffusion.SimpleLoss(model, images, 4, seed: 1);
        Assert.That(loss, Is.GreaterThan(0).And.LessThan(1.0), "the trained model predicts ε better than a zero predictor (loss 1)");
    }

    [Test]
    public void DdpmRefusesAStepCountOtherThanT()
    {
        Assert.That(() => Samplers.For(new SampleOptions { Steps = 10 }).Timesteps(diffusion.Schedule), Throws.ArgumentException.With.Message.Contains("ddim"));
        var ddim = Samplers.For(new SampleOptions { Sampler = SamplerKind.Ddim, Steps = 10 }).Timesteps(diffusion.Schedule);
        Assert.That(ddim, Has.Length.EqualTo(10));
        Assert.That(ddim[0], Is.EqualTo(99));
        Assert.That(ddim[^1], Is.EqualTo(0));
        Assert.That(ddim, Is.Ordered.Descending);
    }

    private static float[] FreshNoise(int count, ulong seed)
    {
        var noise = new float[count * SyntheticImages.Pixels];
        for (int i = 0; i < noise.Length; i++) noise[i] = Math.Clamp(Philox.Normal(seed, 0, (ulong)i), -1f, 1f);
        return noise;
    }
}

/// <summary>Properties of the bound that need no trained model.</summary>
[TestFixture]
public sealed class VariationalBoundTests
{
    [Test]
    public void PriorTermIsAlmostZeroForTheLinearScheduleWithThousandSteps()
    {
        // L_T = KL(N(√ᾱ_T x0, 1 − ᾱ_T) ‖ N(0, 1)) per dimension, at the extremes of the data range.
        var schedule = NoiseSchedule.Linear();
        var device = TestDevice.Cpu;
        using var x0 = device.Pool.Rent<float>(4);
        using var kl = device.Pool.Rent<float>(1);
        x0.CopyFrom([-1f, 1f, 0f, 0.5f]);
        device.Kernels<DiffusionKernels>().PriorKL(x0.View, schedule.AlphasBar[^1], kl.View, 1, 4, (float)(1 / (4 * Math.Log(2))));
        double bits = kl.ToArray()[0];
        Assert.That(bits, Is.GreaterThanOrEqualTo(0).And.LessThan(1e-4), $"L_T = {bits} bits/dim");
    }
}
