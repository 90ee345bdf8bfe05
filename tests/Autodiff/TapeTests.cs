using ILGPU.Runtime;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Autodiff;

/// <summary>The tape's own behaviour, exercised with the reduction, loss and norm ops.</summary>
[TestFixture]
public sealed class TapeTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    /// <summary>
    /// A test-only op: [a[0], b[0]] from two scalars, so two results can be added by <c>Sum</c> without
    /// depending on another family's Add. Backward: da += dy[0], db += dy[1] (SumBackward with a 1-element dloss).
    /// </summary>
    private static Tensor Stack(Tape tape, Tensor a, Tensor b)
    {
        var y = tape.NewTensor(2);
        a.View.CopyTo(Device.Stream, y.View.SubView(0, 1));
        b.View.CopyTo(Device.Stream, y.View.SubView(1, 1));
        if (tape.NeedsGrad(a, b))
            tape.Record(y, dy =>
            {
                var k = Device.Kernels<ReduceKernels>();
                if (a.RequiresGrad) k.SumBackward(dy.View.SubView(0, 1), tape.GradOf(a).View);
                if (b.RequiresGrad) k.SumBackward(dy.View.SubView(1, 1), tape.GradOf(b).View);
            });
        return y;
    }

    [Test]
    public void GradientsAccumulateWhenATensorFeedsTwoOps()
    {
        const int n = 37;
        var v = TestData.Uniform(n, 1);
        using var x = Tensor.FromArray(Device, v, n);
        x.RequireGrad();
        var tape = new Tape(Device);
        var loss = tape.Sum(Stack(tape, tape.Sum(x), tape.Mean(x))); // L = Σx + mean(x)
        Assert.That(loss.ToScalar(), Is.EqualTo(v.Sum(f => (double)f) * (1 + 1.0 / n)).Within(1e-5));
        tape.Backward(loss);
        Assert.That(x.Grad!.ToArray(), Is.All.EqualTo(1f + 1f / n).Within(1e-7), "dL/dx = 1 + 1/n");

        // A second backward pass adds to a leaf's gradient again (the caller zeroes it between steps).
        loss = tape.Sum(Stack(tape, tape.Sum(x), tape.Mean(x)));
        tape.Backward(loss);
        Assert.That(x.Grad!.ToArray(), Is.All.EqualTo(2 * (1f + 1f / n)).Within(1e-6), "two passes accumulate");
    }

    [Test]
    public void AddGradHandsTheGradientOnWhenTheTapesTensorHasNoneAndAddsOtherwise()
    {
        // Issue 9: a residual's addend takes dy itself (no launch, no clear) when it has no gradient yet; a second
        // contribution adds; a tensor the tape does not own (a caller's leaf) always gets its own buffer.
        var tape = new Tape(Device);
        var t = tape.NewTensor(2, 3);
        var dy = tape.GradOf(tape.NewTensor(2, 3));
        dy.Buffer.CopyFrom(new[] { 1f, 2f, 3f, 4f, 5f, 6f });
        var before = Device.Counters.Snapshot();
        tape.AddGrad(t, dy);
        Assert.That(Device.Counters.Snapshot() - before, Is.EqualTo(new DeviceCount(0, 0, 0)), "handed on: nothing launched");
        Assert.That(t.Grad, Is.SameAs(dy));
        var more = tape.GradOf(tape.NewTensor(2, 3));
        more.Buffer.CopyFrom(new[] { 10f, 10f, 10f, 10f, 10f, 10f });
        tape.AddGrad(t, more);
        Assert.That(t.Grad!.ToArray(), Is.EqualTo(new[] { 11f, 12f, 13f, 14f, 15f, 16f }), "a second contribution adds");

        using var leaf = Tensor.FromArray(Device, new float[6], 2, 3);
        leaf.RequireGrad();
        tape.AddGrad(leaf, more);
        Assert.That(leaf.Grad, Is.Not.SameAs(more), "a tensor the tape does not own keeps its own gradient buffer");
        Assert.That(leaf.Grad!.ToArray(), Is.All.EqualTo(10f));
        var other = tape.NewTensor(6);
        tape.AddGrad(other, more);
        Assert.That(other.Grad, Is.Not.SameAs(more), "another shape gets its own buffer");
        tape.Clear();
        Assert.That(t.Grad, Is.Null);
    }

    [Test]
    public void GradientsAccumulateThroughTwoPathsIntoOneLoss()
    {
        // L = (Σx − mean(x))²: both paths meet in one MSE loss; dL/dx = 2(Σx − x̄)(1 − 1/n).
        const int n = 10;
        var v = TestData.Uniform(n, 2);
        using var x = Tensor.FromArray(Device, v, n);
        x.RequireGrad();
        var tape = new Tape(Device);
        var loss = tape.MseLoss(tape.Sum(x), tape.Mean(x));
        double sum = v.Sum(f => (double)f);
        double diff = sum - sum / n;
        Assert.That(loss.ToScalar(), Is.EqualTo(diff * diff).Within(1e-5));
        tape.Backward(loss);
        Assert.That(x.Grad!.ToArray(), Is.All.EqualTo(2 * diff * (1 - 1.0 / n)).Within(1e-5));
    }

    [Test]
    public void NoGradRecordsNothing()
    {
        using var x = Tensor.FromArray(Device, [1f, 2f, 3f], 3);
        using var gamma = Tensor.FromArray(Device, [1f, 1f, 1f], 3);
        x.RequireGrad();
        var tape = new Tape(Device);
        Tensor loss;
        using (tape.NoGrad())
        {
            Assert.That(tape.IsRecording, Is.False);
            loss = tape.Mean(tape.GroupNorm(tape.Reshape(x, 1, 3), gamma, gamma, 3));
            loss = tape.MseLoss(loss, tape.Sum(x));
        }
        Assert.That(tape.IsRecording, Is.True);
        Assert.That(tape.RecordedSteps, Is.Zero, "no backward step recorded");
        Assert.That(loss.RequiresGrad, Is.False, "results do not require a gradient");
        Assert.Throws<InvalidOperationException>(() => tape.Backward(loss));
        tape.Clear();
        Assert.That(x.Grad!.ToArray(), Is.All.EqualTo(0f), "x's gradient untouched");
    }

    [Test]
    public void BackwardReturnsTheTapesTensorsToThePool()
    {
        using var x = Tensor.FromArray(Device, TestData.Uniform(2 * 4 * 9, 3), 2, 4, 3, 3);
        using var gamma = Tensor.FromArray(Device, TestData.Uniform(4, 4), 4);
        using var beta = Tensor.Zeros(Device, 4);
        using var target = Tensor.Zeros(Device, 2, 4, 3, 3);
        x.RequireGrad();
        gamma.RequireGrad();
        int before = Device.Pool.Outstanding;
        var tape = new Tape(Device);
        var loss = tape.MseLoss(tape.GroupNorm(x, gamma, beta, 2), target);
        Assert.That(Device.Pool.Outstanding, Is.GreaterThan(before), "the forward pass rents tensors");
        Assert.That(tape.OwnedTensors, Is.GreaterThan(0));
        tape.Backward(loss);
        Assert.That(Device.Pool.Outstanding, Is.EqualTo(before), "everything the tape rented is back");
        Assert.That(tape.OwnedTensors, Is.Zero);
        Assert.That(tape.RecordedSteps, Is.Zero);
    }

    [Test]
    public void RepeatedStepsOfASmallGraphAllocateNothingAfterTheFirst()
    {
        using var x = Tensor.FromArray(Device, TestData.Uniform(2 * 8 * 25, 5), 2, 8, 5, 5);
        using var gamma = Tensor.FromArray(Device, TestData.Uniform(8, 6), 8);
        using var beta = Tensor.FromArray(Device, TestData.Uniform(8, 7), 8);
        using var target = Tensor.FromArray(Device, TestData.Uniform(2 * 8 * 25, 8), 2, 8, 5, 5);
        x.RequireGrad();
        gamma.RequireGrad();
        beta.RequireGrad();
        var tape = new Tape(Device);
        float[]? firstGrad = null;
        long allocations = 0;
        for (int step = 0; step < 4; step++)
        {
            gamma.Grad!.Clear();
            var loss = tape.MseLoss(tape.GroupNorm(x, gamma, beta, 4), target);
            tape.Backward(loss);
            var grad = gamma.Grad!.ToArray();
            if (step == 0)
            {
                firstGrad = grad;
                allocations = Device.Pool.AllocationCount;
            }
            else
            {
                Assert.That(Device.Pool.AllocationCount, Is.EqualTo(allocations), $"step {step} allocated device memory");
                Check.BitIdentical(grad, firstGrad!, $"gamma's gradient at step {step}");
            }
        }
    }

    [Test]
    public void BackwardOnANonScalarSaysSo()
    {
        using var x = Tensor.FromArray(Device, [1f, 2f], 2);
        x.RequireGrad();
        var tape = new Tape(Device);
        var e = Assert.Throws<ArgumentException>(() => tape.Backward(tape.Reshape(x, 2, 1)))!;
        Assert.That(e.Message, Does.Contain("scalar").And.Contain("[2, 1]").And.Not.Contain("\n"));
        tape.Clear();
    }
}
