using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Matmul;
using IlgpuDdpm.Kernels.Norm;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Network;
using IlgpuDdpm.Tests.Cli;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Performance;

/// <summary>
/// The launch counts <c>ddpm summary --batch</c> prints (<see cref="StepCounts"/>), held against the device
/// counter, and the optimizer's launches: a fixed handful whatever the number of parameter tensors.
/// </summary>
[TestFixture]
public sealed class StepCountTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    [Test]
    public void ASamplingStepIsAForwardPassAndOneReverseStepKernel()
    {
        var counts = StepCounts.Measure(Device, UNetConfig.Tiny(8));
        Assert.That(counts.Forward.Launches, Is.GreaterThan(50), "the forward pass launched almost nothing: is the counter wired to the launch path?");
        Assert.That(counts.Forward.Synchronizations, Is.Zero, "a forward pass on device data never waits");
        Assert.That(counts.SamplingStep.Launches, Is.EqualTo(counts.Forward.Launches + 1));
        Assert.That(counts.SamplingStep.Synchronizations, Is.Zero, "the timesteps of every step are uploaded once, before the first");
        Assert.That(counts.TrainStep.Synchronizations, Is.LessThanOrEqualTo(1), "the batch upload only");
        Assert.That(counts.TrainStep.Launches, Is.GreaterThan(2 * counts.Forward.Launches), "a train step is a forward, a backward and the optimizer");
    }

    [Test]
    public void TheOptimizerLaunchesAFixedHandfulWhateverTheNumberOfTensors()
    {
        foreach (var config in new[] { UNetConfig.Tiny(8), UNetConfig.Small(8) })
        {
            using var model = new UNet(Device, config, seed: 1);
            using var withEma = new ParameterOptimizer(model.Parameters, new AdamSettings(), 1f, withEma: true);
            using var plain = new ParameterOptimizer(model.Parameters, new AdamSettings(), 1f, withEma: false);
            withEma.Step(1, 1e-3, 0.9f);
            plain.Step(1, 1e-3);
            var before = Device.Counters.Snapshot();
            model.ZeroGrad();
            var zero = Device.Counters.Snapshot() - before;
            before = Device.Counters.Snapshot();
            withEma.Step(2, 1e-3, 0.9f);
            var ema = Device.Counters.Snapshot() - before;
            before = Device.Counters.Snapshot();
            plain.Step(2, 1e-3);
            var adam = Device.Counters.Snapshot() - before;
            string what = $"{model.Parameters.Count} tensors";
            Assert.That(zero, Is.EqualTo(new DeviceCount(0, 1, 0)), $"{what}: zeroing every gradient is one memset");
            Assert.That(ema, Is.EqualTo(new DeviceCount(4, 0, 0)), $"{what}: 2 sum-of-squares + clip scale + Adam with the EMA fused in");
            Assert.That(adam, Is.EqualTo(new DeviceCount(4, 0, 0)), $"{what}: 2 sum-of-squares + clip scale + Adam");
        }
    }

    [Test]
    public void CountingWithoutRunningGivesTheCountsOfARealRun()
    {
        var run = StepCounts.Measure(Device, UNetConfig.Tiny(8), batch: 3);
        var counted = StepCounts.Count(Device, UNetConfig.Tiny(8), batch: 3, gpuVariants: false);
        Assert.That(counted, Is.EqualTo(run));
        Assert.That(Device.CountsOnly, Is.False, "Count restores the device");
    }

    [Test]
    public void TheGpuKernelsCountedWithoutRunningAreThoseARealRunOfThemLaunches()
    {
        // A convolution (tiled GEMM, with the weight gradient's split sums) under a group norm (tree reductions), forward
        // and backward, run for real with the GPU's variants and then only counted. The grouped device: see TestDevice.
        var device = TestDevice.Grouped;
        using var x = Tensor.FromArray(device, Enumerable.Range(0, 2 * 4 * 8 * 8).Select(i => MathF.Sin(i)).ToArray(), 2, 4, 8, 8);
        using var w = Tensor.FromArray(device, Enumerable.Range(0, 8 * 4 * 9).Select(i => 0.1f * MathF.Cos(i)).ToArray(), 8, 4, 3, 3);
        using var gamma = Tensor.FromArray(device, Enumerable.Repeat(1f, 8).ToArray(), 8);
        using var beta = Tensor.FromArray(device, new float[8], 8);
        foreach (var t in new[] { x, w, gamma, beta }) t.RequireGrad();
        DeviceCount Step()
        {
            var before = device.Counters.Snapshot();
            var tape = new Tape(device);
            tape.Backward(tape.Sum(tape.GroupNorm(tape.Conv2d(x, w, null, stride: 2), gamma, beta, groups: 2)));
            return device.Counters.Snapshot() - before;
        }
        device.ChooseGpuVariants = true;
        try
        {
            var run = Step();
            device.CountsOnly = true;
            var counted = Step();
            Assert.That(counted, Is.EqualTo(run));
            Assert.That(run.Launches, Is.GreaterThan(6));
        }
        finally
        {
            device.CountsOnly = false;
            device.ChooseGpuVariants = false;
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void GroupNormIsOneLaunchForwardAndTwoBackwardAndWeightAndBiasGradientsOneGemmOnAGpu(bool gpuVariants)
    {
        // Issue 9's fusions, counted (not run) with either device's kernels: the statistics and the normalisation in one
        // launch; the per-channel sums, then dx, dγ and dβ together; a conv's and a Linear's bias gradient as a column of
        // the weight gradient's GEMM and the input gradient's product in the same launch (on a GPU); a concatenation's
        // backward in one launch.
        var device = Device;
        var d = new GroupNormDims(64, 64, 8, 14 * 14);
        var s = new ConvShape(64, 32, 14, 14, 64, 3);
        using var big = device.Pool.Rent<float>(s.N * s.Cout * s.H * s.W);
        using var small = device.Pool.Rent<float>(s.WeightLength);
        var (v, w) = (big.View, small.View);
        var norm = device.Kernels<NormKernels>();
        var conv = device.Kernels<ConvKernels>();
        (device.CountsOnly, device.ChooseGpuVariants) = (true, gpuVariants);
        try
        {
            long Launches(Action action)
            {
                var before = device.Counters.Snapshot();
                action();
                return (device.Counters.Snapshot() - before).Launches;
            }
            var (c, stats) = (w.SubView(0, d.C), w.SubView(d.C, d.StatCount));
            Assert.That(Launches(() => norm.Forward(new SiluOp(), new NoMask(), v, c, c, v, stats, stats, d)), Is.EqualTo(1), "group norm + SiLU forward");
            Assert.That(Launches(() => norm.Backward(new SiluOp(), new NoMask(), v, c, c, stats, stats, v, v, c, c, d)), Is.EqualTo(2), "group norm + SiLU backward");
            var dropout = new DropoutMask(new PhiloxKey(1, 2, 3), 0.1f);
            Assert.That(Launches(() => norm.Forward(new SiluOp(), dropout, v, c, c, v, stats, stats, d)), Is.EqualTo(1), "group norm + SiLU + dropout forward");
            Assert.That(Launches(() => norm.Backward(new SiluOp(), dropout, v, c, c, stats, stats, v, v, c, c, d)), Is.EqualTo(2), "group norm + SiLU + dropout backward");
            Assert.That(Launches(() => norm.Backward(v, c, c, stats, stats, v, default, c, c, d)), Is.EqualTo(2), "group norm backward without dx");
            long separate = Launches(() => conv.BackwardBias(v.SubView(0, s.OutputLength), c, s));
            long weightOnly = Launches(() => conv.BackwardWeight(v.SubView(0, s.InputLength), v.SubView(0, s.OutputLength), w.SubView(0, s.WeightLength), s));
            long both = Launches(() => conv.BackwardWeightAndBias(v.SubView(0, s.InputLength), v.SubView(0, s.OutputLength), w.SubView(0, s.WeightLength), c, s));
            Assert.That(both, Is.EqualTo(gpuVariants ? weightOnly : weightOnly + separate), "the weight and bias gradients");
            long input = Launches(() => conv.BackwardInput(v.SubView(0, s.OutputLength), w.SubView(0, s.WeightLength), v.SubView(0, s.InputLength), s));
            long all = Launches(() => conv.Backward(v.SubView(0, s.InputLength), w.SubView(0, s.WeightLength), v.SubView(0, s.OutputLength), v.SubView(0, s.InputLength),
                                                    w.SubView(0, s.WeightLength), c, s));
            Assert.That(all, Is.EqualTo(gpuVariants ? input + both - 1 : input + both), "a convolution's backward: input and weight gradients share a launch on a GPU");
            var matmul = device.Kernels<MatmulKernels>();
            long linear = Launches(() => matmul.LinearParameterBackward(v.SubView(0, 64 * d.C), v.SubView(0, 64 * 32), w.SubView(0, d.C * 32), c, 64, d.C, 32));
            Assert.That(linear, Is.EqualTo(gpuVariants ? 1 : 2), "a Linear's weight and bias gradients");
            long linearAll = Launches(() => matmul.LinearBackward(v.SubView(0, 64 * d.C), v.SubView(0, 64 * 32), w.SubView(0, d.C * 32), v.SubView(0, 64 * 32),
                                                                  w.SubView(0, d.C * 32), c, 64, d.C, 32));
            Assert.That(linearAll, Is.EqualTo(gpuVariants ? 1 : 3), "all of a Linear's gradients");
            var elementwise = device.Kernels<ElementwiseKernels>();
            Assert.That(Launches(() => elementwise.ConcatBackward(v.SubView(0, 2 * 64 * 196), v.SubView(0, 64 * 196), v.SubView(0, 64 * 196), 1, 64, 64, 196)), Is.EqualTo(1),
                        "a concatenation's backward, both parts");
        }
        finally
        {
            (device.CountsOnly, device.ChooseGpuVariants) = (false, false);
        }
    }

    [Test]
    public void TheSmallForwardWithTheGpuKernelsLaunchesAtMostHalfOfPyTorchEagersOperations()
    {
        // Issue 9: PyTorch eager runs 481 leaf operations for one forward pass of small (torch.profiler), so ≤ 240.
        var counts = StepCounts.Count(Device, UNetConfig.Small(), batch: 64, gpuVariants: true);
        Assert.That(counts.Forward.Launches, Is.LessThanOrEqualTo(240));
        // Issue 9's train-step target, for both presets: at most 2.5 × the forward + 10.
        Assert.That(counts.TrainStep.Launches, Is.LessThanOrEqualTo(2.5 * counts.Forward.Launches + 10), "small: a train step in at most 2.5 × the forward + 10");
        var tiny = StepCounts.Count(Device, UNetConfig.Tiny(), batch: 64, gpuVariants: true);
        Assert.That(tiny.TrainStep.Launches, Is.LessThanOrEqualTo(2.5 * tiny.Forward.Launches + 10), "tiny: a train step in at most 2.5 × the forward + 10");
        Assert.That(counts.SamplingStep.Launches, Is.EqualTo(counts.Forward.Launches + 1));
        Assert.That(counts.Forward.Synchronizations + counts.SamplingStep.Synchronizations, Is.Zero);
        Assert.That(counts.TrainStep.Synchronizations, Is.LessThanOrEqualTo(1), "the batch upload only");
    }

    [Test]
    public void SummaryPrintsTheCountsTheCounterGives()
    {
        var expected = StepCounts.Measure(Device, UNetConfig.Tiny(8), batch: 3);
        var r = CliHarness.Run("summary", "--preset", "tiny", "--size", "8", "--batch", "3");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain(
            $"launches counted on the device: forward {expected.Forward.Launches}, train step {expected.TrainStep.Launches}, sampling step {expected.SamplingStep.Launches} " +
            $"(+ {expected.Forward.Clears}, {expected.TrainStep.Clears}, {expected.SamplingStep.Clears} clears)"));
        Assert.That(r.Output, Does.Contain("per step, batch 3"));
        var gpu = StepCounts.Count(Device, UNetConfig.Tiny(8), batch: 3, gpuVariants: true);
        Assert.That(r.Output, Does.Contain($"launches with the kernels a GPU runs (counted, not run): forward {gpu.Forward.Launches}, train step {gpu.TrainStep.Launches}"));
    }
}
