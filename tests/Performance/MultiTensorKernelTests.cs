using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Optim;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Performance;

/// <summary>
/// The multi-tensor kernels give the per-tensor kernels' numbers to the bit (so the flat-buffer optimizer changes no
/// training run), and those numbers match a plain double-precision reference.
/// </summary>
[TestFixture]
public sealed class MultiTensorKernelTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    private static DeviceBuffer<float> Upload(float[] data)
    {
        var b = Device.Pool.Rent<float>(data.Length);
        b.CopyFrom(data);
        return b;
    }

    [Test]
    public void SumsOfSquaresAreThoseOfOneReductionPerTensor()
    {
        int[] lengths = [1, 7, 4096, 4097, 10_007, 3];
        int[] offsets = new int[lengths.Length];
        for (int k = 1; k < lengths.Length; k++) offsets[k] = offsets[k - 1] + lengths[k - 1];
        int total = offsets[^1] + lengths[^1];
        var host = TestData.Uniform(total, 17, 3f);
        using var flat = Upload(host);
        using var segments = new TensorSegments(Device, offsets, lengths, total);
        using var scratch = Device.Pool.Rent<float>(segments.Segments);
        using var sums = Device.Pool.Rent<float>(lengths.Length);
        using var perTensor = Device.Pool.Rent<float>(lengths.Length);
        Device.Kernels<MultiTensorKernels>().SumsOfSquares(flat.View, segments, scratch.View, sums.View);
        var optim = Device.Kernels<OptimKernels>();
        for (int k = 0; k < lengths.Length; k++) optim.SumOfSquares(flat.View.SubView(offsets[k], lengths[k]), perTensor.View, k);
        var multi = sums.ToArray();
        Check.BitIdentical(multi, perTensor.ToArray(), "Σx² per tensor, flat vs one reduction per tensor");
        var reference = new double[lengths.Length];
        for (int k = 0; k < lengths.Length; k++)
            for (int i = 0; i < lengths[k]; i++) reference[k] += (double)host[offsets[k] + i] * host[offsets[k] + i];
        Check.Close(multi, reference, 1e-5, 0, "Σx² per tensor vs double");
        Assert.That(segments.Segments, Is.EqualTo(1 + 1 + 1 + 2 + 3 + 1), "segments of 4096");
    }

    [Test]
    public void AdamEmaIsAdamThenEmaToTheBit()
    {
        const int n = 5003;
        var p = TestData.Uniform(n, 1);
        var g = TestData.Uniform(n, 2, 0.1f);
        var m = TestData.Uniform(n, 3, 0.01f);
        var v = Array.ConvertAll(TestData.Uniform(n, 4, 1e-3f), Math.Abs);
        var e = TestData.Uniform(n, 5);
        var step = new AdamSettings { WeightDecay = 0.01f }.ForStep(7, 3e-4);
        using var scale = Upload([2.5f, 0.37f]);
        using DeviceBuffer<float> p1 = Upload(p), m1 = Upload(m), v1 = Upload(v), e1 = Upload(e), g1 = Upload(g);
        using DeviceBuffer<float> p2 = Upload(p), m2 = Upload(m), v2 = Upload(v), e2 = Upload(e);
        var optim = Device.Kernels<OptimKernels>();
        optim.Adam(p1.View, g1.View, m1.View, v1.View, step, scale.View, 1);
        optim.Ema(e1.View, p1.View, 0.95f);
        var before = Device.Counters.Snapshot();
        Device.Kernels<MultiTensorKernels>().AdamEma(p2.View, g1.View, m2.View, v2.View, step, scale.View, 1, e2.View, 0.95f);
        Assert.That((Device.Counters.Snapshot() - before).Launches, Is.EqualTo(1));
        Check.BitIdentical(p2.ToArray(), p1.ToArray(), "weights");
        Check.BitIdentical(m2.ToArray(), m1.ToArray(), "first moments");
        Check.BitIdentical(v2.ToArray(), v1.ToArray(), "second moments");
        Check.BitIdentical(e2.ToArray(), e1.ToArray(), "EMA weights");
        // And Adam's formula itself (Kingma & Ba 2015, Alg. 1, AdamW decay), in double, on a few elements.
        for (int j = 0; j < n; j += 997)
        {
            double gj = g[j] * 0.37, mj = 0.9 * m[j] + 0.1 * gj, vj = 0.999 * v[j] + 0.001 * gj * gj;
            double mHat = mj / (1 - Math.Pow(0.9, 7)), vHat = vj / (1 - Math.Pow(0.999, 7));
            double pj = p[j] - 3e-4 * (mHat / (Math.Sqrt(vHat) + 1e-8) + 0.01 * p[j]);
            Assert.That(p2.ToArray()[j], Is.EqualTo(pj).Within(1e-6 + 1e-5 * Math.Abs(pj)), $"p[{j}]");
        }
        Assert.That(() => Device.Kernels<MultiTensorKernels>().AdamEma(p2.View, g1.View, m2.View, v2.View, step, scale.View, 2, e2.View, 0.95f),
                    Throws.ArgumentException.With.Message.Contains("scale index"));
    }
}
