using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Matmul;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class ConvTests
{
    private static ComputeDevice Device => TestDevice.Cpu;
    private static ConvKernels Kernels => Device.Kernels<ConvKernels>();

    // The tiled kernels run on the suite's second CPU accelerator (see TestDevice.Grouped).
    private static ComputeDevice TiledDevice => TestDevice.Grouped;

    private const double Rtol = 1e-4, Atol = 1e-4;

    // (N, Cin, H, W, Cout, K, stride, padding). Sizes deliberately not multiples of 4 (the blocked kernels'
    // block edge) or 64 (the tiled kernels' tile edge), plus the real model's 28×28 × 16 channels.
    private static readonly int[][] BlockedShapes =
    [
        // K=3 s=1 p=1 (Conv3x3)
        [2, 3, 7, 7, 5, 3, 1, 1],
        [2, 16, 28, 28, 16, 3, 1, 1],
        [1, 5, 6, 9, 11, 3, 1, 1],
        [3, 1, 5, 4, 1, 3, 1, 1],
        [1, 3, 5, 6, 4, 3, 1, 2],
        // K=3 s=2 p=1 (Downsample)
        [2, 3, 7, 7, 5, 3, 2, 1],
        [2, 8, 14, 14, 8, 3, 2, 1],
        [1, 4, 9, 6, 3, 3, 2, 1],
        [1, 3, 8, 8, 6, 3, 2, 0],
        // K=1 s=1 p=0 (skip projections, attention)
        [2, 3, 7, 7, 5, 1, 1, 0],
        [2, 16, 28, 28, 16, 1, 1, 0],
        [1, 6, 5, 3, 2, 1, 1, 0],
        // anything else takes the generic kernels
        [2, 3, 7, 6, 5, 5, 1, 2],
        [1, 4, 8, 7, 6, 3, 3, 1],
        [2, 3, 6, 7, 5, 1, 2, 0],
        [1, 2, 6, 6, 3, 3, 1, 0],
        [1, 3, 4, 5, 2, 1, 1, 1],
    ];

    // The tiled (GPU) kernels run 256 threads per group with barriers: very slow on the CPU accelerator, so tiny shapes.
    private static readonly int[][] TiledShapes =
    [
        [2, 3, 7, 7, 5, 3, 1, 1],
        [1, 3, 7, 6, 5, 3, 2, 1],
        [2, 3, 5, 5, 5, 1, 1, 0],
        [1, 2, 6, 5, 3, 5, 1, 2],
        // more output channels than one 64-wide tile; stride 2 with a 1×1 kernel (backward-input phases no tap reaches)
        [1, 3, 5, 4, 70, 3, 2, 1],
        [1, 2, 5, 6, 3, 1, 2, 0],
    ];

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var c in BlockedShapes) yield return Case("blocked", c);
        foreach (var c in TiledShapes) yield return Case("tiled", c);
    }

    private static TestCaseData Case(string variant, int[] c) =>
        new TestCaseData(variant, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
            .SetArgDisplayNames(variant, $"x[{c[0]},{c[1]},{c[2]},{c[3]}]", $"w[{c[4]},{c[1]},{c[5]},{c[5]}]", $"s{c[6]}", $"p{c[7]}");

    private static GemmVariant Variant(string name) => name == "tiled" ? GemmVariant.Tiled : GemmVariant.RegisterBlocked;

    /// <summary>The device and kernels a variant's tests run on.</summary>
    private static (ComputeDevice Device, ConvKernels Kernels) On(string variant)
    {
        var device = variant == "tiled" ? TiledDevice : Device;
        return (device, device.Kernels<ConvKernels>());
    }

    private static DeviceBuffer<float> Upload(float[] data) => Upload(Device, data);

    private static DeviceBuffer<float> Upload(ComputeDevice device, float[] data)
    {
        var buffer = device.Pool.Rent<float>(data.Length);
        buffer.CopyFrom(data);
        return buffer;
    }

    // ---------------------------------------------------------------------------------------------------
    // Kernels against the double-precision reference
    // ---------------------------------------------------------------------------------------------------

    [TestCaseSource(nameof(Cases))]
    public void ForwardMatchesReference(string variant, int n, int cin, int h, int w, int cout, int k, int stride, int pad)
    {
        var s = new ConvShape(n, cin, h, w, cout, k, stride, pad);
        var x = TestData.Uniform(s.InputLength, 1);
        var wt = TestData.Uniform(s.WeightLength, 2, 0.5f);
        var b = TestData.Uniform(s.Cout, 3);
        var (device, kernels) = On(variant);
        using var xb = Upload(device, x);
        using var wb = Upload(device, wt);
        using var bb = Upload(device, b);
        using var yb = device.Pool.Rent<float>(s.OutputLength);

        kernels.Forward(xb.View, wb.View, bb.View, yb.View, s, Variant(variant));
        Check.Close(yb.ToArray(), ConvReference.Forward(TestData.ToDouble(x), TestData.ToDouble(wt), TestData.ToDouble(b), s), Rtol, Atol, $"forward {s}");

        kernels.Forward(xb.View, wb.View, ArrayView<float>.Empty, yb.View, s, Variant(variant));
        Check.Close(yb.ToArray(), ConvReference.Forward(TestData.ToDouble(x), TestData.ToDouble(wt), null, s), Rtol, Atol, $"forward without bias {s}");
    }

    // The add fused into the epilogue (ConvAddend) against the convolution followed by the element-wise add it
    // replaces, on every path (blocked 3×3 stride 1 and 2, blocked 1×1, the GEMM core's pointwise and im2col, the tiled
    // kernels): the same bits, with and without a bias.
    [TestCaseSource(nameof(Cases))]
    public void FusedAddGivesTheBitsOfTheConvolutionThenTheAdd(string variant, int n, int cin, int h, int w, int cout, int k, int stride, int pad)
    {
        var s = new ConvShape(n, cin, h, w, cout, k, stride, pad);
        var (device, kernels) = On(variant);
        var elementwise = device.Kernels<ElementwiseKernels>();
        using var xb = Upload(device, TestData.Uniform(s.InputLength, 1));
        using var wb = Upload(device, TestData.Uniform(s.WeightLength, 2, 0.5f));
        using var bb = Upload(device, TestData.Uniform(s.Cout, 3));
        using var residual = Upload(device, TestData.Uniform(s.OutputLength, 4));
        using var vector = Upload(device, TestData.Uniform(s.N * s.Cout, 5));
        using var fused = device.Pool.Rent<float>(s.OutputLength);
        using var plain = device.Pool.Rent<float>(s.OutputLength);
        using var expected = device.Pool.Rent<float>(s.OutputLength);
        foreach (var bias in new[] { bb.View, ArrayView<float>.Empty })
        {
            kernels.Forward(xb.View, wb.View, bias, plain.View, s, Variant(variant));
            kernels.Forward(xb.View, wb.View, bias, fused.View, s, residual.View, ConvAddend.SameShape, Variant(variant));
            elementwise.Add(plain.View, residual.View, expected.View);
            Check.BitIdentical(fused.ToArray(), expected.ToArray(), $"conv + residual {s}, bias {bias.Length != 0}");
            kernels.Forward(xb.View, wb.View, bias, fused.View, s, vector.View, ConvAddend.PerChannel, Variant(variant));
            elementwise.AddChannelVector(plain.View, vector.View, expected.View, s.N, s.Cout, s.Ho * s.Wo);
            Check.BitIdentical(fused.ToArray(), expected.ToArray(), $"conv + per-channel vector {s}, bias {bias.Length != 0}");
        }
        var e = Assert.Throws<ArgumentException>(() => kernels.Forward(xb.View, wb.View, bb.View, fused.View, s, vector.View, ConvAddend.SameShape))!;
        Assert.That(e.Message, Does.Contain("conv addend (SameShape): expected").And.Not.Contain("\n"));
    }

    [TestCaseSource(nameof(Cases))]
    public void BackwardInputMatchesReferenceAndAdds(string variant, int n, int cin, int h, int w, int cout, int k, int stride, int pad)
    {
        var s = new ConvShape(n, cin, h, w, cout, k, stride, pad);
        var dy = TestData.Uniform(s.OutputLength, 4);
        var wt = TestData.Uniform(s.WeightLength, 5, 0.5f);
        var before = TestData.Uniform(s.InputLength, 6);
        var (device, kernels) = On(variant);
        using var dyb = Upload(device, dy);
        using var wb = Upload(device, wt);
        using var dxb = Upload(device, before);

        kernels.BackwardInput(dyb.View, wb.View, dxb.View, s, Variant(variant));
        var expected = ConvReference.BackwardInput(TestData.ToDouble(dy), TestData.ToDouble(wt), s);
        for (int i = 0; i < expected.Length; i++) expected[i] += before[i];
        Check.Close(dxb.ToArray(), expected, Rtol, Atol, $"dx = before + backward-input {s}");
    }

    [TestCaseSource(nameof(Cases))]
    public void BackwardWeightMatchesReferenceAndAdds(string variant, int n, int cin, int h, int w, int cout, int k, int stride, int pad)
    {
        var s = new ConvShape(n, cin, h, w, cout, k, stride, pad);
        var x = TestData.Uniform(s.InputLength, 7);
        var dy = TestData.Uniform(s.OutputLength, 8);
        var before = TestData.Uniform(s.WeightLength, 9);
        var (device, kernels) = On(variant);
        using var xb = Upload(device, x);
        using var dyb = Upload(device, dy);
        using var dwb = Upload(device, before);

        kernels.BackwardWeight(xb.View, dyb.View, dwb.View, s, Variant(variant));
        var expected = ConvReference.BackwardWeight(TestData.ToDouble(x), TestData.ToDouble(dy), s);
        for (int i = 0; i < expected.Length; i++) expected[i] += before[i];
        // Sums of up to N·Ho·Wo = 1568 products: allow for float accumulation.
        Check.Close(dwb.ToArray(), expected, Rtol, 5e-4, $"dw = before + backward-weight {s}");
    }

    [Test]
    public void TiledWeightGradientSumsItsReductionSplitsInOrder()
    {
        var s = new ConvShape(2, 3, 9, 9, 4, 3, 1, 1); // 162 pixels = 11 slices of 16
        var x = TestData.Uniform(s.InputLength, 10);
        var dy = TestData.Uniform(s.OutputLength, 11);
        var (device, kernels) = On("tiled");
        using var xb = Upload(device, x);
        using var dyb = Upload(device, dy);
        using var dwb = device.Pool.RentZeroed<float>(s.WeightLength);
        var expected = ConvReference.BackwardWeight(TestData.ToDouble(x), TestData.ToDouble(dy), s);
        foreach (int splits in new[] { 1, 3, 11 })
        {
            dwb.Clear();
            kernels.BackwardWeight(xb.View, dyb.View, dwb.View, s, GemmVariant.Tiled, splits);
            var first = dwb.ToArray();
            Check.Close(first, expected, Rtol, 5e-4, $"tiled dw with {splits} splits");
            // The last group of a tile to finish sums the splits (SplitSumStore): which one that is varies, the bits do not.
            dwb.Clear();
            kernels.BackwardWeight(xb.View, dyb.View, dwb.View, s, GemmVariant.Tiled, splits);
            Assert.That(dwb.ToArray(), Is.EqualTo(first), $"tiled dw with {splits} splits, run again");
        }
    }

    [TestCase("tiled", 1)]
    [TestCase("tiled", 3)]
    [TestCase("blocked", 0)]
    public void BackwardGivesEveryGradientAndAdds(string variant, int splits)
    {
        // Tiled: the input gradient's first product and the weight gradient's share one launch (GemmCore.RunPair).
        foreach (var s in new[] { new ConvShape(2, 3, 9, 9, 4, 3, 1, 1), new ConvShape(2, 5, 8, 8, 6, 3, 2, 1), new ConvShape(1, 4, 6, 5, 3, 1, 1, 0) })
        {
            var (x, w, dy) = (TestData.Uniform(s.InputLength, 40), TestData.Uniform(s.WeightLength, 41), TestData.Uniform(s.OutputLength, 42));
            var (dx0, dw0, db0) = (TestData.Uniform(s.InputLength, 43), TestData.Uniform(s.WeightLength, 44), TestData.Uniform(s.Cout, 45));
            var (device, kernels) = On(variant);
            using var xb = Upload(device, x);
            using var wb = Upload(device, w);
            using var dyb = Upload(device, dy);
            using var dxb = Upload(device, dx0);
            using var dwb = Upload(device, dw0);
            using var dbb = Upload(device, db0);
            kernels.Backward(xb.View, wb.View, dyb.View, dxb.View, dwb.View, dbb.View, s, Variant(variant), splits);
            var dx = ConvReference.BackwardInput(TestData.ToDouble(dy), TestData.ToDouble(w), s);
            var dw = ConvReference.BackwardWeight(TestData.ToDouble(x), TestData.ToDouble(dy), s);
            var db = ConvReference.BackwardBias(TestData.ToDouble(dy), s);
            for (int i = 0; i < dx.Length; i++) dx[i] += dx0[i];
            for (int i = 0; i < dw.Length; i++) dw[i] += dw0[i];
            for (int i = 0; i < db.Length; i++) db[i] += db0[i];
            Check.Close(dxb.ToArray(), dx, Rtol, 5e-4, $"{variant} dx, {splits} splits, {s}");
            Check.Close(dwb.ToArray(), dw, Rtol, 5e-4, $"{variant} dw, {splits} splits, {s}");
            Check.Close(dbb.ToArray(), db, Rtol, 5e-4, $"{variant} db, {splits} splits, {s}");
        }
    }

    [TestCase("tiled", 1)]
    [TestCase("tiled", 3)]
    [TestCase("tiled", 11)]
    [TestCase("blocked", 0)]
    public void WeightAndBiasGradientsTogetherMatchTheReferencesAndAdd(string variant, int splits)
    {
        // On the tiled path the bias gradient is the last column of the weight-gradient product (a column of ones in Xᵀ).
        foreach (var s in new[] { new ConvShape(2, 3, 9, 9, 4, 3, 1, 1), new ConvShape(2, 5, 8, 8, 6, 3, 2, 1), new ConvShape(1, 4, 6, 5, 3, 1, 1, 0) })
        {
            var x = TestData.Uniform(s.InputLength, 20);
            var dy = TestData.Uniform(s.OutputLength, 21);
            var (dwBefore, dbBefore) = (TestData.Uniform(s.WeightLength, 22), TestData.Uniform(s.Cout, 23));
            var (device, kernels) = On(variant);
            using var xb = Upload(device, x);
            using var dyb = Upload(device, dy);
            using var dwb = Upload(device, dwBefore);
            using var dbb = Upload(device, dbBefore);
            kernels.BackwardWeightAndBias(xb.View, dyb.View, dwb.View, dbb.View, s, Variant(variant), splits);
            var dw = ConvReference.BackwardWeight(TestData.ToDouble(x), TestData.ToDouble(dy), s);
            var db = ConvReference.BackwardBias(TestData.ToDouble(dy), s);
            for (int i = 0; i < dw.Length; i++) dw[i] += dwBefore[i];
            for (int i = 0; i < db.Length; i++) db[i] += dbBefore[i];
            Check.Close(dwb.ToArray(), dw, Rtol, 5e-4, $"{variant} dw, {splits} splits, {s}");
            Check.Close(dbb.ToArray(), db, Rtol, 5e-4, $"{variant} db, {splits} splits, {s}");
        }
    }

    [TestCase(2, 3, 7, 7, 5)]
    [TestCase(2, 16, 28, 28, 16)]
    [TestCase(1, 4, 3, 5, 1)]
    public void BackwardBiasMatchesReferenceAndAdds(int n, int cin, int h, int w, int cout)
    {
        var s = new ConvShape(n, cin, h, w, cout, 3);
        var dy = TestData.Uniform(s.OutputLength, 12);
        var before = TestData.Uniform(s.Cout, 13);
        using var dyb = Upload(dy);
        using var dbb = Upload(before);
        Kernels.BackwardBias(dyb.View, dbb.View, s);
        var expected = ConvReference.BackwardBias(TestData.ToDouble(dy), s);
        for (int i = 0; i < expected.Length; i++) expected[i] += before[i];
        Check.Close(dbb.ToArray(), expected, Rtol, 5e-4, $"db = before + backward-bias {s}");
    }

    // ---------------------------------------------------------------------------------------------------
    // Gradients against central finite differences of the reference: L = Σ dy·conv(x, w, b)
    // ---------------------------------------------------------------------------------------------------

    [TestCase(2, 3, 7, 7, 5, 3, 1, 1)]
    [TestCase(2, 3, 7, 7, 5, 3, 2, 1)]
    [TestCase(2, 3, 7, 7, 5, 1, 1, 0)]
    [TestCase(1, 2, 6, 7, 3, 5, 2, 2)]
    public void GradientsMatchFiniteDifferences(int n, int cin, int h, int w, int cout, int k, int stride, int pad)
    {
        var s = new ConvShape(n, cin, h, w, cout, k, stride, pad);
        var x = TestData.Uniform(s.InputLength, 20);
        var wt = TestData.Uniform(s.WeightLength, 21, 0.5f);
        var b = TestData.Uniform(s.Cout, 22);
        var dy = TestData.Uniform(s.OutputLength, 23);
        double[] xd = TestData.ToDouble(x), wd = TestData.ToDouble(wt), bd = TestData.ToDouble(b), dyd = TestData.ToDouble(dy);

        using var xb = Upload(x);
        using var wb = Upload(wt);
        using var dyb = Upload(dy);
        using var dx = Device.Pool.RentZeroed<float>(s.InputLength);
        using var dw = Device.Pool.RentZeroed<float>(s.WeightLength);
        using var db = Device.Pool.RentZeroed<float>(s.Cout);
        Kernels.BackwardInput(dyb.View, wb.View, dx.View, s);
        Kernels.BackwardWeight(xb.View, dyb.View, dw.View, s);
        Kernels.BackwardBias(dyb.View, db.View, s);

        CompareWithFiniteDifferences(dx.ToArray(), v => FiniteDifference.Dot(dyd, ConvReference.Forward(v, wd, bd, s)), xd, "dL/dx");
        CompareWithFiniteDifferences(dw.ToArray(), v => FiniteDifference.Dot(dyd, ConvReference.Forward(xd, v, bd, s)), wd, "dL/dw");
        CompareWithFiniteDifferences(db.ToArray(), v => FiniteDifference.Dot(dyd, ConvReference.Forward(xd, wd, v, s)), bd, "dL/db");
    }

    /// <summary>Central differences at up to 24 spread-out indices (always the first and the last).</summary>
    private static void CompareWithFiniteDifferences(float[] analytic, Func<double[], double> loss, double[] at, string what)
    {
        int count = Math.Min(24, at.Length);
        var indices = Enumerable.Range(0, count).Select(i => (int)((long)i * (at.Length - 1) / Math.Max(1, count - 1))).Distinct().ToArray();
        var numeric = FiniteDifference.Gradient(loss, at, 1e-3, indices);
        Check.Close(indices.Select(i => analytic[i]).ToArray(), indices.Select(i => numeric[i]).ToArray(), 1e-3, 1e-3, what);
    }

    // ---------------------------------------------------------------------------------------------------
    // Determinism
    // ---------------------------------------------------------------------------------------------------

    [TestCase("blocked", 2, 16, 28, 28, 16, 3, 1, 1)]
    [TestCase("blocked", 2, 8, 14, 14, 8, 3, 2, 1)]
    [TestCase("blocked", 2, 6, 7, 7, 5, 1, 1, 0)]
    [TestCase("tiled", 2, 3, 7, 7, 5, 3, 1, 1)]
    public void SameInputsGiveBitIdenticalResults(string variant, int n, int cin, int h, int w, int cout, int k, int stride, int pad)
    {
        var s = new ConvShape(n, cin, h, w, cout, k, stride, pad);
        var v = Variant(variant);
        var (device, kernels) = On(variant);
        using var xb = Upload(device, TestData.Uniform(s.InputLength, 30));
        using var wb = Upload(device, TestData.Uniform(s.WeightLength, 31));
        using var bb = Upload(device, TestData.Uniform(s.Cout, 32));
        using var dyb = Upload(device, TestData.Uniform(s.OutputLength, 33));
        float[] Run(Action<ArrayView<float>> launch, int length)
        {
            using var output = device.Pool.RentZeroed<float>(length);
            launch(output.View);
            return output.ToArray();
        }
        Check.BitIdentical(Run(y => kernels.Forward(xb.View, wb.View, bb.View, y, s, v), s.OutputLength),
                           Run(y => kernels.Forward(xb.View, wb.View, bb.View, y, s, v), s.OutputLength), "forward twice");
        Check.BitIdentical(Run(dx => kernels.BackwardInput(dyb.View, wb.View, dx, s, v), s.InputLength),
                           Run(dx => kernels.BackwardInput(dyb.View, wb.View, dx, s, v), s.InputLength), "backward-input twice");
        Check.BitIdentical(Run(dw => kernels.BackwardWeight(xb.View, dyb.View, dw, s, v), s.WeightLength),
                           Run(dw => kernels.BackwardWeight(xb.View, dyb.View, dw, s, v), s.WeightLength), "backward-weight twice");
        Check.BitIdentical(Run(db => kernels.BackwardBias(dyb.View, db, s), s.Cout),
                           Run(db => kernels.BackwardBias(dyb.View, db, s), s.Cout), "backward-bias twice");
    }

    // ---------------------------------------------------------------------------------------------------
    // Shapes and bad input
    // ---------------------------------------------------------------------------------------------------

    [Test]
    public void ShapeComputesOutputSizeAndDefaultPadding()
    {
        var same = new ConvShape(2, 3, 28, 28, 16, 3);
        Assert.That((same.Padding, same.Ho, same.Wo), Is.EqualTo((1, 28, 28)));
        var down = new ConvShape(2, 3, 28, 27, 16, 3, stride: 2);
        Assert.That((down.Ho, down.Wo), Is.EqualTo((14, 14)));
        var pointwise = new ConvShape(1, 8, 7, 5, 4, 1);
        Assert.That((pointwise.Padding, pointwise.Ho, pointwise.Wo), Is.EqualTo((0, 7, 5)));
        var valid = new ConvShape(1, 1, 5, 5, 1, 5, padding: 0);
        Assert.That((valid.Ho, valid.Wo), Is.EqualTo((1, 1)));
        Assert.That(same.Flops, Is.EqualTo(2L * 2 * 16 * 28 * 28 * 3 * 9));
        Assert.That((same.InputLength, same.WeightLength, same.OutputLength), Is.EqualTo((2 * 3 * 784, 16 * 3 * 9, 2 * 16 * 784)));
    }

    [Test]
    public void ShapeRejectsBadDimensions()
    {
        Assert.Throws<ArgumentException>(() => _ = new ConvShape(0, 3, 8, 8, 4, 3));
        Assert.Throws<ArgumentException>(() => _ = new ConvShape(1, 3, 8, 8, 4, 2));
        Assert.Throws<ArgumentException>(() => _ = new ConvShape(1, 3, 8, 8, 4, 3, stride: 0));
        Assert.Throws<ArgumentException>(() => _ = new ConvShape(1, 3, 8, 8, 4, 3, padding: -2));
        var tooBig = Assert.Throws<ArgumentException>(() => _ = new ConvShape(1, 3, 2, 8, 4, 5, padding: 1));
        Assert.That(tooBig!.Message, Does.Contain("does not fit"));
    }

    [Test]
    public void LaunchRejectsBuffersOfTheWrongLength()
    {
        var s = new ConvShape(1, 2, 5, 5, 3, 3);
        using var x = Device.Pool.RentZeroed<float>(s.InputLength);
        using var w = Device.Pool.RentZeroed<float>(s.WeightLength);
        using var y = Device.Pool.RentZeroed<float>(s.OutputLength);
        using var wrong = Device.Pool.RentZeroed<float>(7);
        var e = Assert.Throws<ArgumentException>(() => Kernels.Forward(wrong.View, w.View, ArrayView<float>.Empty, y.View, s));
        Assert.That(e!.Message, Does.Contain("conv x: expected N·Cin·H·W = 50"));
        Assert.Throws<ArgumentException>(() => Kernels.Forward(x.View, wrong.View, ArrayView<float>.Empty, y.View, s));
        Assert.Throws<ArgumentException>(() => Kernels.Forward(x.View, w.View, wrong.View, y.View, s));
        Assert.Throws<ArgumentException>(() => Kernels.BackwardInput(y.View, w.View, wrong.View, s));
        Assert.Throws<ArgumentException>(() => Kernels.BackwardWeight(x.View, y.View, wrong.View, s));
        Assert.Throws<ArgumentException>(() => Kernels.BackwardBias(y.View, wrong.View, s));
    }

    // ---------------------------------------------------------------------------------------------------
    // The Conv2d op
    // ---------------------------------------------------------------------------------------------------

    [TestCase(3, 1, -1)]
    [TestCase(3, 2, 1)]
    [TestCase(1, 1, 0)]
    public void Conv2dForwardMatchesReferenceAndRecordsOneStep(int k, int stride, int padding)
    {
        var s = new ConvShape(2, 3, 7, 7, 4, k, stride, padding);
        var x = TestData.Uniform(s.InputLength, 40);
        var wt = TestData.Uniform(s.WeightLength, 41);
        var b = TestData.Uniform(s.Cout, 42);
        using var xt = Tensor.FromArray(Device, x, 2, 3, 7, 7);
        using var weight = Parameter.Create(Device, "conv.weight", 4, 3, k, k);
        using var bias = Parameter.Create(Device, "conv.bias", 4);
        weight.CopyFrom(wt);
        bias.CopyFrom(b);
        var tape = new Tape(Device);

        var y = tape.Conv2d(xt, weight, bias, stride, padding);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 4, s.Ho, s.Wo }));
        Check.Close(y.ToArray(), ConvReference.Forward(TestData.ToDouble(x), TestData.ToDouble(wt), TestData.ToDouble(b), s), Rtol, Atol, "Conv2d");
        Assert.That(tape.RecordedSteps, Is.EqualTo(1), "a conv with trainable weights records its backward");
        Assert.That(y.RequiresGrad, Is.True);

        using (tape.NoGrad()) tape.Conv2d(xt, weight, bias, stride, padding);
        Assert.That(tape.RecordedSteps, Is.EqualTo(1), "nothing is recorded under NoGrad");
        tape.Clear();

        using var frozen = Tensor.FromArray(Device, wt, 4, 3, k, k);
        var z = tape.Conv2d(xt, frozen, null, stride, padding);
        Assert.That(tape.RecordedSteps, Is.EqualTo(0), "nothing needs a gradient");
        Check.Close(z.ToArray(), ConvReference.Forward(TestData.ToDouble(x), TestData.ToDouble(wt), null, s), Rtol, Atol, "Conv2d without bias");
        tape.Clear();
    }

    // The fused op on the tape against the two ops it replaces: the same output and the same bits in every gradient,
    // the addend's included (dy itself for a residual, dy summed over each plane for a per-channel vector).
    [TestCase(3, 1, 1, false)]
    [TestCase(3, 2, 1, true)]
    [TestCase(1, 1, 0, false)]
    [TestCase(3, 1, 1, true)]
    public void Conv2dWithAnAddendGivesTheBitsOfTheConvThenTheAdd(int k, int stride, int padding, bool perChannel)
    {
        var s = new ConvShape(2, 3, 7, 7, 4, k, stride, padding);
        float[][] Run(bool fused)
        {
            using var x = Tensor.FromArray(Device, TestData.Uniform(s.InputLength, 60), 2, 3, 7, 7);
            using var weight = Parameter.Create(Device, "conv.weight", 4, 3, k, k);
            using var bias = Parameter.Create(Device, "conv.bias", 4);
            using var addend = perChannel ? Tensor.FromArray(Device, TestData.Uniform(s.N * s.Cout, 61), s.N, s.Cout)
                                          : Tensor.FromArray(Device, TestData.Uniform(s.OutputLength, 61), s.N, s.Cout, s.Ho, s.Wo);
            using var target = Tensor.FromArray(Device, TestData.Uniform(s.OutputLength, 62), s.N, s.Cout, s.Ho, s.Wo);
            weight.CopyFrom(TestData.Uniform(s.WeightLength, 63));
            bias.CopyFrom(TestData.Uniform(s.Cout, 64));
            x.RequireGrad();
            addend.RequireGrad();
            var tape = new Tape(Device);
            var y = fused ? tape.Conv2d(x, weight, bias, addend, stride, padding)
                : perChannel ? tape.AddChannelVector(tape.Conv2d(x, weight, bias, stride, padding), addend)
                : tape.Add(tape.Conv2d(x, weight, bias, stride, padding), addend);
            var output = y.ToArray();
            tape.Backward(tape.MseLoss(y, target));
            float[][] result = [output, x.Grad!.ToArray(), weight.Grad!.ToArray(), bias.Grad!.ToArray(), addend.Grad!.ToArray()];
            tape.Clear();
            return result;
        }
        var (a, b) = (Run(fused: true), Run(fused: false));
        string[] names = ["y", "dx", "dweight", "dbias", "daddend"];
        for (int i = 0; i < names.Length; i++) Check.BitIdentical(a[i], b[i], $"{names[i]} ({(perChannel ? "per-channel" : "residual")} addend)");
        var tape2 = new Tape(Device);
        using var x2 = Tensor.Zeros(Device, 2, 3, 7, 7);
        using var w2 = Tensor.Zeros(Device, 4, 3, k, k);
        using var wrong = Tensor.Zeros(Device, 2, 5);
        Assert.That(Assert.Throws<ArgumentException>(() => tape2.Conv2d(x2, w2, null, wrong, stride, padding))!.Message, Does.Contain("conv2d addend must be"));
    }

    /// <summary>
    /// The tape's backward needs a scalar loss; a second convolution whose kernel covers the whole first
    /// output (K2 = Ho, padding 0, one filter) turns y into L = Σ u·y with u = the second conv's weight — the
    /// vector–Jacobian product of the first conv — so gradients reach x, w and b through the recorded steps.
    /// </summary>
    [TestCase(3, 1, 1, 5)]
    [TestCase(3, 2, 1, 9)]
    [TestCase(1, 1, 0, 3)]
    public void Conv2dGradientsThroughTheTapeMatchFiniteDifferences(int k, int stride, int padding, int size)
    {
        var s = new ConvShape(1, 3, size, size, 4, k, stride, padding);
        Assert.That(s.Ho, Is.EqualTo(s.Wo).And.Matches<int>(v => v % 2 == 1), "the test needs a square, odd-sized output");
        var outer = new ConvShape(1, 4, s.Ho, s.Wo, 1, s.Ho, 1, 0);
        var x = TestData.Uniform(s.InputLength, 50);
        var wt = TestData.Uniform(s.WeightLength, 51);
        var b = TestData.Uniform(s.Cout, 52);
        var u = TestData.Uniform(outer.WeightLength, 53);
        double[] xd = TestData.ToDouble(x), wd = TestData.ToDouble(wt), bd = TestData.ToDouble(b), ud = TestData.ToDouble(u);

        using var xt = Tensor.FromArray(Device, x, 1, 3, size, size);
        xt.RequireGrad();
        using var weight = Parameter.Create(Device, "conv.weight", 4, 3, k, k);
        using var bias = Parameter.Create(Device, "conv.bias", 4);
        using var upstream = Parameter.Create(Device, "probe.weight", 1, 4, s.Ho, s.Ho);
        weight.CopyFrom(wt);
        bias.CopyFrom(b);
        upstream.CopyFrom(u);
        var tape = new Tape(Device);

        var y = tape.Conv2d(xt, weight, bias, stride, padding);
        var loss = tape.Conv2d(y, upstream, null, 1, 0);
        Assert.That(loss.Shape, Is.EqualTo(new[] { 1, 1, 1, 1 }));
        double expectedLoss = FiniteDifference.Dot(ud, ConvReference.Forward(xd, wd, bd, s));
        Assert.That(loss.ToScalar(), Is.EqualTo(expectedLoss).Within(1e-4 * (1 + Math.Abs(expectedLoss))), "L = Σ u·conv(x)");
        tape.Backward(loss);

        double L(double[] xv, double[] wv, double[] bv) => FiniteDifference.Dot(ud, ConvReference.Forward(xv, wv, bv, s));
        CompareWithFiniteDifferences(xt.Grad!.ToArray(), v => L(v, wd, bd), xd, "x.Grad");
        CompareWithFiniteDifferences(weight.Gradient.ToArray(), v => L(xd, v, bd), wd, "weight.Grad");
        CompareWithFiniteDifferences(bias.Gradient.ToArray(), v => L(xd, wd, v), bd, "bias.Grad");
        // The probe's own gradient is the first conv's output.
        Check.Close(upstream.Gradient.ToArray(), ConvReference.Forward(xd, wd, bd, s), Rtol, Atol, "probe.Grad = y");
    }

    [Test]
    public void Conv2dRejectsMismatchedOperands()
    {
        using var x = Tensor.Zeros(Device, 2, 3, 7, 7);
        using var w = Tensor.Zeros(Device, 4, 3, 3, 3);
        using var wrongCin = Tensor.Zeros(Device, 4, 5, 3, 3);
        using var notSquare = Tensor.Zeros(Device, 4, 3, 3, 1);
        using var evenK = Tensor.Zeros(Device, 4, 3, 2, 2);
        using var wrongBias = Tensor.Zeros(Device, 5);
        using var flat = Tensor.Zeros(Device, 6, 49);
        var tape = new Tape(Device);
        var e = Assert.Throws<ArgumentException>(() => tape.Conv2d(x, wrongCin, null));
        Assert.That(e!.Message, Does.Contain("expects 5 input channels"));
        Assert.Throws<ArgumentException>(() => tape.Conv2d(x, notSquare, null));
        Assert.Throws<ArgumentException>(() => tape.Conv2d(x, evenK, null));
        Assert.Throws<ArgumentException>(() => tape.Conv2d(x, w, wrongBias));
        Assert.Throws<ArgumentException>(() => tape.Conv2d(flat, w, null));
        Assert.Throws<ArgumentException>(() => tape.Conv2d(x, w, null, stride: 0));
        Assert.That(tape.OwnedTensors, Is.EqualTo(0), "a rejected op allocates nothing");
    }
}
