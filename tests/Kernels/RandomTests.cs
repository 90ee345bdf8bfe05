using IlgpuDdpm.Kernels.Random;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

[TestFixture]
public sealed class RandomTests
{
    private static RandomKernels Kernels => TestDevice.Cpu.Kernels<RandomKernels>();

    [Test]
    public void PhiloxMatchesThePublishedKnownAnswer()
    {
        // Random123 kat_vectors, philox4x32_10: counter = key = 0 → 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
        Philox.Block(0, 0, 0, out uint x0, out uint x1, out uint x2, out uint x3);
        Assert.That(new[] { x0, x1, x2, x3 }, Is.EqualTo(new uint[] { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 }));
    }

    [Test]
    public void SameKeyGivesSameNumbersEveryCallAndMatchesTheHost()
    {
        var key = new PhiloxKey(1234, 7, 99);
        using var a = TestDevice.Cpu.Pool.Rent<float>(1001);
        using var b = TestDevice.Cpu.Pool.Rent<float>(1001);
        Kernels.Normal(a.View, key);
        Kernels.Normal(b.View, key);
        var first = a.ToArray();
        Check.BitIdentical(first, b.ToArray(), "two draws with one key");
        for (int i = 0; i < first.Length; i += 97)
            Assert.That(first[i], Is.EqualTo(Philox.Normal(1234, 7, 99 + (ulong)i)).Within(1e-6f), $"device vs host at {i}");
        Kernels.Normal(b.View, key.Advance(1001));
        Assert.That(b.ToArray(), Is.Not.EqualTo(first), "advancing the offset must give new numbers");
    }

    [Test]
    public void NormalHasMeanZeroAndVarianceOne()
    {
        const int n = 1 << 16;
        using var buffer = TestDevice.Cpu.Pool.Rent<float>(n);
        Kernels.Normal(buffer.View, new PhiloxKey(42, 1, 0));
        var v = buffer.ToArray();
        double mean = v.Average(x => (double)x);
        double variance = v.Sum(x => (x - mean) * (x - mean)) / (n - 1);
        // Standard errors: mean 1/√n, variance √(2/n) for a normal.
        Assert.That(Math.Abs(mean), Is.LessThan(4 / Math.Sqrt(n)), "mean");
        Assert.That(Math.Abs(variance - 1), Is.LessThan(4 * Math.Sqrt(2.0 / n)), "variance");
    }

    [Test]
    public void UniformAndIntegersStayInRange()
    {
        const int n = 1 << 14;
        using var u = TestDevice.Cpu.Pool.Rent<float>(n);
        using var k = TestDevice.Cpu.Pool.Rent<int>(n);
        Kernels.Uniform(u.View, new PhiloxKey(5, 2, 0));
        Kernels.Integers(k.View, new PhiloxKey(5, 3, 0), 10);
        var uv = u.ToArray();
        var kv = k.ToArray();
        Assert.That(uv.Min(), Is.GreaterThanOrEqualTo(0f));
        Assert.That(uv.Max(), Is.LessThan(1f));
        Assert.That(Math.Abs(uv.Average() - 0.5), Is.LessThan(4 * Math.Sqrt(1 / 12.0 / n)));
        var counts = new int[10];
        foreach (var x in kv) counts[x]++;
        Assert.That(counts, Has.All.GreaterThan(n / 10 - 4 * (int)Math.Sqrt(n * 0.09)), "each of 10 values about n/10 times");
    }
}
