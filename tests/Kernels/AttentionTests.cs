using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Attention;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class AttentionTests
{
    private static ComputeDevice Device => TestDevice.Cpu;
    private static AttentionKernels Kernels => Device.Kernels<AttentionKernels>();

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var buffer = Device.Pool.Rent<float>(data.Length);
        buffer.CopyFrom(data);
        return buffer;
    }

    // ---------------------------------------------------------------------------------------------
    // Softmax kernels
    // ---------------------------------------------------------------------------------------------

    [TestCase(1, 1)]
    [TestCase(3, 7)]
    [TestCase(17, 33)]
    [TestCase(4, 64)]
    public void SoftmaxForwardMatchesTheReference(int rows, int cols)
    {
        var x = TestData.Uniform(rows * cols, 1, 4f);
        using var dx = Upload(x);
        using var dy = Device.Pool.Rent<float>(rows * cols);
        Kernels.SoftmaxForward(dx.View, dy.View, rows, cols);
        var y = dy.ToArray();
        Check.Close(y, AttentionReference.Softmax(TestData.ToDouble(x), rows, cols), 1e-5, 1e-7, "softmax");
        for (int r = 0; r < rows; r++)
            Assert.That(y.AsSpan(r * cols, cols).ToArray().Sum(), Is.EqualTo(1f).Within(1e-5f), $"row {r} sums to 1");
    }

    [Test]
    public void SoftmaxIsStableForHugeAndTinyLogits()
    {
        // exp(1000) overflows float; a naive softmax gives NaN. Rows: huge, very negative, mixed.
        const int rows = 3, cols = 9;
        var x = TestData.Uniform(rows * cols, 2, 3f);
        for (int j = 0; j < cols; j++) { x[j] += 1000f; x[cols + j] -= 1000f; }
        x[2 * cols] = 500f;
        using var dx = Upload(x);
        Kernels.SoftmaxForward(dx.View, dx.View, rows, cols); // in place
        var y = dx.ToArray();
        Assert.That(y, Has.All.Matches<float>(float.IsFinite), "no NaN or infinity");
        Check.Close(y, AttentionReference.Softmax(TestData.ToDouble(x), rows, cols), 1e-5, 1e-7, "stable softmax");
        Assert.That(y[2 * cols], Is.EqualTo(1f), "a dominant logit takes all the weight");
    }

    [TestCase(3, 7)]
    [TestCase(5, 33)]
    [TestCase(2, 1)]
    public void SoftmaxBackwardAddsTheVectorJacobianProduct(int rows, int cols)
    {
        var x = TestData.Uniform(rows * cols, 3, 2f);
        var upstream = TestData.Uniform(rows * cols, 4);
        var dx0 = TestData.Uniform(rows * cols, 5);
        using var dX = Upload(x);
        using var dY = Device.Pool.Rent<float>(rows * cols);
        using var dUp = Upload(upstream);
        using var dGrad = Upload(dx0);
        Kernels.SoftmaxForward(dX.View, dY.View, rows, cols);
        Kernels.SoftmaxBackward(dY.View, dUp.View, dGrad.View, rows, cols);

        var up = TestData.ToDouble(upstream);
        var fd = FiniteDifference.Gradient(v => FiniteDifference.Dot(up, AttentionReference.Softmax(v, rows, cols)), TestData.ToDouble(x));
        var expected = fd.Select((g, i) => g + dx0[i]).ToArray(); // backward ADDS into dx
        Check.Close(dGrad.ToArray(), expected, 1e-4, 1e-5, "softmax dx");
    }

    [Test]
    public void SoftmaxKernelsAreDeterministic()
    {
        const int rows = 13, cols = 29;
        using var dx = Upload(TestData.Uniform(rows * cols, 6, 3f));
        using var dup = Upload(TestData.Uniform(rows * cols, 7));
        using var y = Device.Pool.Rent<float>(rows * cols);
        using var g = Device.Pool.RentZeroed<float>(rows * cols);
        Kernels.SoftmaxForward(dx.View, y.View, rows, cols);
        Kernels.SoftmaxBackward(y.View, dup.View, g.View, rows, cols);
        var (y1, g1) = (y.ToArray(), g.ToArray());
        g.Clear();
        Kernels.SoftmaxForward(dx.View, y.View, rows, cols);
        Kernels.SoftmaxBackward(y.View, dup.View, g.View, rows, cols);
        Check.BitIdentical(y1, y.ToArray(), "softmax forward twice");
        Check.BitIdentical(g1, g.ToArray(), "softmax backward twice");
    }

    [Test]
    public void SoftmaxRejectsWrongLengths()
    {
        using var a = Device.Pool.Rent<float>(12);
        using var b = Device.Pool.Rent<float>(10);
        var ex = Assert.Throws<ArgumentException>(() => Kernels.SoftmaxForward(a.View, b.View, 3, 4))!;
        Assert.That(ex.Message, Does.Contain("y must be [3, 4] = 12 elements, got 10"));
        Assert.Throws<ArgumentException>(() => Kernels.SoftmaxBackward(a.View, a.View, b.View, 3, 4));
        Assert.Throws<ArgumentException>(() => Kernels.SoftmaxForward(a.View, a.View, 0, 4));
    }

    // ---------------------------------------------------------------------------------------------
    // Softmax op
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void SoftmaxOpWorksOverTheLastDimensionOfAnyRankAndMatchesFiniteDifferences()
    {
        int[] shape = [2, 3, 5];
        const int rows = 6, cols = 5;
        var x = TestData.Uniform(rows * cols, 8, 2f);
        var upstream = TestData.Uniform(rows * cols, 9);
        using var tx = Tensor.FromArray(Device, x, shape);
        tx.RequireGrad();
        var g0 = TapeGradient.Seed(tx, 10);
        var tape = new Tape(Device);
        var y = tape.Softmax(tx);
        Assert.That(y.Shape, Is.EqualTo(shape));
        Assert.That(tape.RecordedSteps, Is.EqualTo(1));
        Check.Close(y.ToArray(), AttentionReference.Softmax(TestData.ToDouble(x), rows, cols), 1e-5, 1e-7, "softmax op");
        TapeGradient.Backward(tape, y, upstream);

        var up = TestData.ToDouble(upstream);
        var fd = FiniteDifference.Gradient(v => FiniteDifference.Dot(up, AttentionReference.Softmax(v, rows, cols)), TestData.ToDouble(x));
        Check.Close(tx.Grad!.ToArray(), TapeGradient.Plus(fd, g0), 1e-4, 1e-5, "softmax op dx (added to the seeded gradient)");

        using var vector = Tensor.FromArray(Device, [1f, 2f, 3f], 3);
        Check.Close(tape.Softmax(vector).ToArray(), AttentionReference.Softmax([1, 2, 3], 1, 3), 1e-6, 1e-7, "rank 1");
        tape.Clear();
    }

    // ---------------------------------------------------------------------------------------------
    // Attention op
    // ---------------------------------------------------------------------------------------------

    [TestCase(2, 4, 9)]
    [TestCase(2, 8, 16)]
    [TestCase(1, 3, 20)]
    public void AttentionForwardMatchesTheDirectReference(int n, int c, int l)
    {
        int len = n * c * l;
        var q = TestData.Uniform(len, 10, 1.5f);
        var k = TestData.Uniform(len, 11, 1.5f);
        var v = TestData.Uniform(len, 12);
        using var tq = Tensor.FromArray(Device, q, n, c, l);
        using var tk = Tensor.FromArray(Device, k, n, c, l);
        using var tv = Tensor.FromArray(Device, v, n, c, l);
        var tape = new Tape(Device);
        var o = tape.Attention(tq, tk, tv);
        Assert.That(o.Shape, Is.EqualTo(new[] { n, c, l }));
        Check.Close(o.ToArray(), AttentionReference.Attention(TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), n, c, l),
                    1e-4, 1e-6, "attention");
        Assert.That(tape.RecordedSteps, Is.EqualTo(0), "nothing requires a gradient");
        tape.Clear();
    }

    [Test]
    public void AttentionAcceptsNchwAndFlattensThePositions()
    {
        const int n = 2, c = 4, h = 3, w = 3, l = h * w;
        var q = TestData.Uniform(n * c * l, 13);
        var k = TestData.Uniform(n * c * l, 14);
        var v = TestData.Uniform(n * c * l, 15);
        using var tq = Tensor.FromArray(Device, q, n, c, h, w);
        using var tk = Tensor.FromArray(Device, k, n, c, h, w);
        using var tv = Tensor.FromArray(Device, v, n, c, h, w);
        tq.RequireGrad();
        var tape = new Tape(Device);
        var o = tape.Attention(tq, tk, tv);
        Assert.That(o.Shape, Is.EqualTo(new[] { n, c, h, w }));
        Check.Close(o.ToArray(), AttentionReference.Attention(TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), n, c, l),
                    1e-4, 1e-6, "attention NCHW");
        Assert.That(tape.RecordedSteps, Is.EqualTo(3), "qᵀk, softmax and v·wᵀ are recorded");
        tape.Clear();
    }

    [TestCase(2, 4, 9)]
    [TestCase(2, 8, 16)]
    public void AttentionBackwardMatchesFiniteDifferencesForQKAndV(int n, int c, int l)
    {
        int len = n * c * l;
        var q = TestData.Uniform(len, 20, 1.5f);
        var k = TestData.Uniform(len, 21, 1.5f);
        var v = TestData.Uniform(len, 22);
        var upstream = TestData.Uniform(len, 23);
        using var tq = Tensor.FromArray(Device, q, n, c, l);
        using var tk = Tensor.FromArray(Device, k, n, c, l);
        using var tv = Tensor.FromArray(Device, v, n, c, l);
        tq.RequireGrad(); tk.RequireGrad(); tv.RequireGrad();
        var (gq, gk, gv) = (TapeGradient.Seed(tq, 24), TapeGradient.Seed(tk, 25), TapeGradient.Seed(tv, 26));
        var tape = new Tape(Device);
        var o = tape.Attention(tq, tk, tv);
        Assert.That(tape.RecordedSteps, Is.EqualTo(3));
        TapeGradient.Backward(tape, o, upstream);

        var (qd, kd, vd, up) = (TestData.ToDouble(q), TestData.ToDouble(k), TestData.ToDouble(v), TestData.ToDouble(upstream));
        double L(double[] qs, double[] ks, double[] vs) => FiniteDifference.Dot(up, AttentionReference.Attention(qs, ks, vs, n, c, l));
        // Gradients ADD to the seeded values.
        Check.Close(tq.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(x => L(x, kd, vd), qd), gq), 1e-3, 1e-5, "dq");
        Check.Close(tk.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(x => L(qd, x, vd), kd), gk), 1e-3, 1e-5, "dk");
        Check.Close(tv.Grad!.ToArray(), TapeGradient.Plus(FiniteDifference.Gradient(x => L(qd, kd, x), vd), gv), 1e-3, 1e-5, "dv");
    }

    [Test]
    public void AttentionForwardAndBackwardAreBitIdenticalAcrossRuns()
    {
        const int n = 2, c = 8, l = 16, len = n * c * l;
        using var tq = Tensor.FromArray(Device, TestData.Uniform(len, 30), n, c, l);
        using var tk = Tensor.FromArray(Device, TestData.Uniform(len, 31), n, c, l);
        using var tv = Tensor.FromArray(Device, TestData.Uniform(len, 32), n, c, l);
        var upstream = TestData.Uniform(len, 33);
        tq.RequireGrad(); tk.RequireGrad(); tv.RequireGrad();

        (float[] O, float[] Dq, float[] Dk, float[] Dv) Run()
        {
            tq.Grad!.Clear(); tk.Grad!.Clear(); tv.Grad!.Clear();
            var tape = new Tape(Device);
            var o = tape.Attention(tq, tk, tv);
            var values = o.ToArray();
            TapeGradient.Backward(tape, o, upstream);
            return (values, tq.Grad.ToArray(), tk.Grad.ToArray(), tv.Grad.ToArray());
        }

        var first = Run();
        var second = Run();
        Check.BitIdentical(first.O, second.O, "o");
        Check.BitIdentical(first.Dq, second.Dq, "dq");
        Check.BitIdentical(first.Dk, second.Dk, "dk");
        Check.BitIdentical(first.Dv, second.Dv, "dv");
        Assert.That(first.Dq, Has.Some.Not.EqualTo(0f), "gradients are not trivially zero");
    }

    [Test]
    public void AttentionRejectsMismatchedShapes()
    {
        using var a = Tensor.Zeros(Device, 2, 4, 9);
        using var b = Tensor.Zeros(Device, 2, 4, 8);
        using var flat = Tensor.Zeros(Device, 4, 9);
        var tape = new Tape(Device);
        var ex = Assert.Throws<ArgumentException>(() => tape.Attention(a, b, a))!;
        Assert.That(ex.Message, Does.StartWith("attention:"));
        Assert.Throws<ArgumentException>(() => tape.Attention(a, a, b));
        Assert.Throws<ArgumentException>(() => tape.Attention(flat, flat, flat));
        tape.Clear();
    }
}
