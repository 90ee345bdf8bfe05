using IlgpuDdpm.Kernels.Peak;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>The calibration kernels the benchmarks divide by must compute what they claim to.</summary>
[TestFixture]
public sealed class PeakTests
{
    [Test]
    public void MultiplyAddComputesEightChains()
    {
        const int threads = 37;
        using var output = TestDevice.Cpu.Pool.Rent<float>(threads);
        TestDevice.Cpu.Kernels<PeakKernels>().MultiplyAdd(output.View, threads);
        var actual = output.ToArray();
        var expected = new double[threads];
        for (int i = 0; i < threads; i++)
        {
            float sum = 0;
            for (int chain = 0; chain < 8; chain++)
            {
                float a = i * 1e-7f + chain;
                for (int r = 0; r < 16 * PeakKernels.InnerRounds; r++) a = a * 0.999f + 1e-3f;
                sum += a;
            }
            expected[i] = sum;
        }
        Check.Close(actual, expected, 1e-4, 1e-4, "multiply-add chains");
        Assert.That(PeakKernels.FlopsPerThread, Is.EqualTo(2L * 8 * 16 * PeakKernels.InnerRounds));
    }

    [Test]
    public void CopyCopiesAndRefusesMismatchedLengths()
    {
        var data = TestData.Uniform(1000, 1);
        using var source = TestDevice.Cpu.Pool.Rent<float>(1000);
        using var destination = TestDevice.Cpu.Pool.Rent<float>(1000);
        using var shorter = TestDevice.Cpu.Pool.Rent<float>(999);
        source.CopyFrom(data);
        TestDevice.Cpu.Kernels<PeakKernels>().Copy(source.View, destination.View);
        Check.BitIdentical(destination.ToArray(), data, "copy");
        Assert.That(() => TestDevice.Cpu.Kernels<PeakKernels>().Copy(source.View, shorter.View), Throws.ArgumentException);
    }
}
