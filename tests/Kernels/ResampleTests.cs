using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Resample;
using NUnit.Framework;
using R = IlgpuDdpm.Tests.Kernels.ElementwiseReference;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Nearest ×2 upsampling against <see cref="ElementwiseReference.Upsample2x"/>, its backward against
/// central finite differences of the reference (added onto a random prior gradient), with the CPU
/// accelerator's own launch shape, the GPU's and an odd capped one.
/// </summary>
[TestFixture]
public sealed class ResampleTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    /// <summary>
    /// Launch shapes: 0 = the device's own family (what ops use); 1 = the GPU's (4 units per thread, no cap);
    /// 2 = 3 units per thread capped at 5 threads (an odd stride, many trips round the grid-stride loop).
    /// </summary>
    public static readonly int[] Variants = [0, 1, 2];

    private static readonly GridStride[] LaunchShapes = [default, new(GridStride.GpuItemsPerThread, int.MaxValue), new(3, 5)];

    private static readonly Dictionary<int, ResampleKernels> Families = new();

    private static ResampleKernels Family(int variant)
    {
        if (variant == 0) return Device.Kernels<ResampleKernels>();
        lock (Families)
        {
            if (!Families.TryGetValue(variant, out var k))
                Families[variant] = k = ResampleKernels.CreateWith(Device, LaunchShapes[variant]);
            return k;
        }
    }

    // [N, C, H, W]: a single pixel, odd sizes, non-square, more elements than one thread's share.
    public static readonly int[][] Shapes = [[1, 1, 1, 1], [2, 3, 5, 7], [3, 2, 4, 3], [1, 5, 1, 9], [2, 4, 8, 8]];

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    [Test]
    public void Upsample2xMatchesReference([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Shapes))] int[] shape)
    {
        int n = shape[0], c = shape[1], h = shape[2], w = shape[3];
        var x = TestData.Uniform(n * c * h * w, 1);
        using var xb = Upload(x);
        using var yb = Device.Pool.Rent<float>(4 * x.Length);
        Family(variant).Upsample2x(xb.View, yb.View, n, c, h, w);
        var expected = R.Upsample2x(TestData.ToDouble(x), n, c, h, w);
        Check.BitIdentical(yb.ToArray(), expected.Select(v => (float)v).ToArray(), $"upsample {string.Join("x", shape)}");
    }

    [Test]
    public void Upsample2xBackwardAddsTheBlockSums([ValueSource(nameof(Variants))] int variant, [ValueSource(nameof(Shapes))] int[] shape)
    {
        int n = shape[0], c = shape[1], h = shape[2], w = shape[3];
        var x = TestData.Uniform(n * c * h * w, 2);
        var dy = TestData.Uniform(4 * x.Length, 3);
        var prior = TestData.Uniform(x.Length, 4);
        using var dyb = Upload(dy);
        using var dxb = Upload(prior);
        Family(variant).Upsample2xBackward(dyb.View, dxb.View, n, c, h, w);
        var actual = dxb.ToArray();

        var upstream = TestData.ToDouble(dy);
        var indices = x.Length <= 64 ? null : Enumerable.Range(0, x.Length).Where(i => i % 7 == 0 || i == x.Length - 1).ToArray();
        var grad = FiniteDifference.Gradient(z => FiniteDifference.Dot(upstream, R.Upsample2x(z, n, c, h, w)), TestData.ToDouble(x), 1e-3, indices);
        var probed = indices ?? Enumerable.Range(0, x.Length).ToArray();
        Check.Close(probed.Select(i => actual[i]).ToArray(), probed.Select(i => prior[i] + grad[i]).ToArray(), 1e-4, 2e-5,
            $"upsample backward {string.Join("x", shape)}");
    }

    [Test]
    public void Upsample2xBackwardIsRepeatable()
    {
        var dy = TestData.Uniform(4 * 2 * 3 * 9 * 11, 5, 1000f);
        using var dyb = Upload(dy);
        using var a = Device.Pool.RentZeroed<float>(dy.Length / 4);
        using var b = Device.Pool.RentZeroed<float>(dy.Length / 4);
        Family(0).Upsample2xBackward(dyb.View, a.View, 2, 3, 9, 11);
        Family(2).Upsample2xBackward(dyb.View, b.View, 2, 3, 9, 11);
        Check.BitIdentical(a.ToArray(), b.ToArray(), "same bits for any launch shape");
    }

    [Test]
    public void WrongLengthsThrowOneLineArgumentExceptions()
    {
        using var x = Device.Pool.Rent<float>(12);
        using var y = Device.Pool.Rent<float>(47);
        var k = Family(0);
        var e = Assert.Throws<ArgumentException>(() => k.Upsample2x(x.View, y.View, 1, 1, 3, 4))!;
        Assert.That(e.Message, Does.Contain("expected 48 elements, got 47").And.Not.Contain("\n"));
        Assert.Throws<ArgumentException>(() => k.Upsample2xBackward(y.View, x.View, 1, 1, 3, 4));
        Assert.Throws<ArgumentException>(() => k.Upsample2x(x.View, y.View, 1, 0, 3, 4));
    }
}
