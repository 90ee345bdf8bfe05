using IlgpuDdpm.Kernels.Classify;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using NUnit.Framework;
using R = IlgpuDdpm.Tests.Kernels.ClassifyReference;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Global average pooling and softmax cross-entropy against <see cref="ClassifyReference"/>; backwards
/// against central finite differences of the reference (added onto a random prior gradient), with the
/// device's own launch shape and an odd capped one.
/// </summary>
[TestFixture]
public sealed class ClassifyTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    public static readonly int[] Variants = [0, 1];

    private static ClassifyKernels? odd;

    private static ClassifyKernels Family(int variant) =>
        variant == 0 ? Device.Kernels<ClassifyKernels>() : odd ??= ClassifyKernels.CreateWith(Device, new GridStride(3, 5));

    // [rows, spatial] and [rows, classes]: one element, odd sizes, more than one thread's share.
    public static readonly int[][] Shapes = [[1, 1], [3, 7], [10, 49], [17, 10]];

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    private static DeviceBuffer<int> UploadLabels(int[] labels)
    {
        var b = Device.Pool.Rent<int>(labels.Length);
        b.CopyFrom(labels);
        return b;
    }

    private static int[] Labels(int rows, int classes, int seed)
    {
        var rng = new System.Random(seed);
        return Enumerable.Range(0, rows).Select(_ => rng.Next(classes)).ToArray();
    }

    [Test]
    public void GlobalAveragePoolMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Shapes))] int[] shape)
    {
        int rows = shape[0], spatial = shape[1];
        var x = TestData.Uniform(rows * spatial, 1);
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(rows);
        Family(variant).GlobalAveragePool(xb.View, yb.View, rows, spatial);
        Check.Close(yb.ToArray(), R.GlobalAveragePool(TestData.ToDouble(x), rows, spatial), 1e-5, 1e-6, $"pool {rows}x{spatial}");
    }

    [Test]
    public void GlobalAveragePoolBackwardMatchesFiniteDifferences([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Shapes))] int[] shape)
    {
        int rows = shape[0], spatial = shape[1];
        var x = TestData.Uniform(rows * spatial, 2);
        var dy = TestData.Uniform(rows, 3);
        var prior = TestData.Uniform(x.Length, 4);
        using var dyb = Upload(dy);
        using var dxb = Upload(prior);
        Family(variant).GlobalAveragePoolBackward(dyb.View, dxb.View, rows, spatial);
        var upstream = TestData.ToDouble(dy);
        var grad = FiniteDifference.Gradient(z => FiniteDifference.Dot(upstream, R.GlobalAveragePool(z, rows, spatial)), TestData.ToDouble(x), 1e-3);
        Check.Close(dxb.ToArray(), prior.Select((p, i) => p + grad[i]).ToArray(), 1e-4, 2e-5, $"pool backward {rows}x{spatial}");
    }

    [Test]
    public void SoftmaxCrossEntropyMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Shapes))] int[] shape)
    {
        int rows = shape[0], classes = shape[1];
        // Large logits: the log-sum-exp shift must keep exp from overflowing.
        var z = TestData.Uniform(rows * classes, 5, 30f);
        var labels = Labels(rows, classes, 6);
        using var zb = Upload(z);
        using var lb = UploadLabels(labels);
        using var rowLoss = Device.Pool.Rent<float>(rows);
        using var probs = Device.Pool.Rent<float>(z.Length);
        using var loss = Device.Pool.Rent<float>(1);
        Family(variant).SoftmaxCrossEntropy(zb.View, lb.View, rowLoss.View, probs.View, loss.View, rows, classes);
        var zd = TestData.ToDouble(z);
        Check.Close(loss.ToArray(), [R.MeanCrossEntropy(zd, labels, classes)], 1e-5, 1e-5, $"cross-entropy {rows}x{classes}");
        Check.Close(probs.ToArray(), AttentionReference.Softmax(zd, rows, classes), 1e-5, 1e-6, $"softmax {rows}x{classes}");
    }

    [Test]
    public void SoftmaxCrossEntropyBackwardMatchesFiniteDifferences([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Shapes))] int[] shape)
    {
        int rows = shape[0], classes = shape[1];
        var z = TestData.Uniform(rows * classes, 7, 3f);
        var labels = Labels(rows, classes, 8);
        var prior = TestData.Uniform(z.Length, 9);
        const float upstream = 0.7f;
        using var zb = Upload(z);
        using var lb = UploadLabels(labels);
        using var rowLoss = Device.Pool.Rent<float>(rows);
        using var probs = Device.Pool.Rent<float>(z.Length);
        using var loss = Device.Pool.Rent<float>(1);
        using var dloss = Upload([upstream]);
        using var dz = Upload(prior);
        var k = Family(variant);
        k.SoftmaxCrossEntropy(zb.View, lb.View, rowLoss.View, probs.View, loss.View, rows, classes);
        k.SoftmaxCrossEntropyBackward(probs.View, lb.View, dloss.View, dz.View, rows, classes);
        var grad = FiniteDifference.Gradient(v => upstream * R.MeanCrossEntropy(v, labels, classes), TestData.ToDouble(z), 1e-4);
        Check.Close(dz.ToArray(), prior.Select((p, i) => p + grad[i]).ToArray(), 1e-4, 2e-5, $"cross-entropy backward {rows}x{classes}");
    }

    [Test]
    public void WrongLengthsThrowOneLineArgumentExceptions()
    {
        using var x = Device.Pool.Rent<float>(12);
        using var y = Device.Pool.Rent<float>(5);
        using var labels = Device.Pool.Rent<int>(3);
        var k = Family(0);
        var e = Assert.Throws<ArgumentException>(() => k.GlobalAveragePool(x.View, y.View, 4, 3))!;
        Assert.That(e.Message, Does.Contain("expected 4 elements, got 5").And.Not.Contain("\n"));
        Assert.Throws<ArgumentException>(() => k.SoftmaxCrossEntropy(x.View, labels.View, y.View, x.View, y.View, 4, 3));
        Assert.Throws<ArgumentException>(() => k.GlobalAveragePoolBackward(y.View, x.View, 0, 3));
    }
}
