using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Network;

/// <summary>Parameter creation on the device and the seeded initialisation of DESIGN.md §4 (no kernels run).</summary>
[TestFixture]
public sealed class InitializationTests
{
    private static bool IsNearZeroLayer(string name) =>
        name.EndsWith(".conv2.weight") || name.EndsWith(".proj_out.weight") || name == "tail.conv.weight";

    [Test]
    public void BuiltNetworkHasExactlyThePlannedParameters()
    {
        var config = UNetConfig.Tiny(28, 1);
        using var net = new UNet(TestDevice.Cpu, config, seed: 1);
        var specs = UNetLayout.Plan(config).Parameters;
        Assert.That(net.Parameters.Select(p => p.Name), Is.EqualTo(specs.Select(s => s.Name)));
        for (int i = 0; i < specs.Count; i++)
            Assert.That(net.Parameters[i].Shape, Is.EqualTo(specs[i].Shape), specs[i].Name);
        Assert.That(net.ParameterCount, Is.EqualTo(176_849));
        Assert.That(net.Summary().TotalParameters, Is.EqualTo(net.ParameterCount));
        Assert.That(net.GetParameter("mid.attn.q.weight").Shape, Is.EqualTo(new[] { 32, 32, 1, 1 }));
        var e = Assert.Throws<KeyNotFoundException>(() => net.GetParameter("mid.attn.qq.weight"))!;
        Assert.That(e.Message, Is.EqualTo("the model has no parameter named 'mid.attn.qq.weight'"));
        Assert.That(net.DropoutDraws(2), Is.EqualTo(0), "tiny has no dropout");
    }

    [Test]
    public void DisposeReturnsEveryParameterAndGradientToThePool()
    {
        // (ddpm-cifar10's 35.7M is checked on the layout, which the constructor compares name for name:
        // building it here would cost seconds of allocation for nothing more.)
        long before = TestDevice.Cpu.Pool.Outstanding;
        var net = new UNet(TestDevice.Cpu, UNetConfig.Small(32, 3), seed: 3);
        Assert.That(net.ParameterCount, Is.EqualTo(UNetLayout.Plan(net.Config).ParameterCount));
        Assert.That(TestDevice.Cpu.Pool.Outstanding - before, Is.EqualTo(2), "one flat value buffer and one flat gradient buffer for all parameters");
        for (int i = 0; i < net.Parameters.Count; i++)
            Assert.That((net.Parameters[i].Buffer.Offset, net.Parameters[i].Gradient.Buffer.Offset), Is.EqualTo((net.Parameters.Offsets[i], net.Parameters.Offsets[i])),
                        $"{net.Parameters[i]}: a window on the flat buffers at its offset");
        net.Dispose();
        Assert.That(TestDevice.Cpu.Pool.Outstanding, Is.EqualTo(before));
        Assert.Throws<ObjectDisposedException>(() => net.Initialize(1));
    }

    [Test]
    public void InvalidConfigIsRefusedBeforeAnythingIsAllocated()
    {
        long before = TestDevice.Cpu.Pool.Outstanding;
        var e = Assert.Throws<ArgumentException>(() => new UNet(TestDevice.Cpu, UNetConfig.Tiny(28, 1) with { ImageSize = 29 }))!;
        Assert.That(e.Message, Is.EqualTo("invalid model config: image size 29 must be divisible by 2 for 2 levels"));
        Assert.That(TestDevice.Cpu.Pool.Outstanding, Is.EqualTo(before));
    }

    [Test]
    public void InitialisationIsDeterministicFromTheSeed()
    {
        var config = UNetConfig.Tiny(16, 3);
        using var a = new UNet(TestDevice.Cpu, config, seed: 7);
        using var b = new UNet(TestDevice.Cpu, config, seed: 7);
        using var c = new UNet(TestDevice.Cpu, config, seed: 8);
        int differing = 0, xavier = 0;
        for (int i = 0; i < a.Parameters.Count; i++)
        {
            var pa = a.Parameters[i].ToArray();
            Check.BitIdentical(pa, b.Parameters[i].ToArray(), a.Parameters[i].Name);
            if (UNetLayout.Plan(config).Parameters[i].Init.Kind == InitKind.XavierUniform)
            {
                xavier++;
                if (!pa.AsSpan().SequenceEqual(c.Parameters[i].ToArray())) differing++;
            }
        }
        Assert.That(differing, Is.EqualTo(xavier), "another seed changes every random parameter");
        c.Initialize(7);
        for (int i = 0; i < a.Parameters.Count; i++)
            Check.BitIdentical(a.Parameters[i].ToArray(), c.Parameters[i].ToArray(), "re-initialised " + a.Parameters[i].Name);
    }

    [Test]
    public void ValuesComeFromPhiloxStreamPerParameter()
    {
        var specs = UNetLayout.Plan(UNetConfig.Tiny(16, 1)).Parameters;
        for (int i = 0; i < specs.Count; i++)
        {
            if (specs[i].Init.Kind != InitKind.XavierUniform) continue;
            var values = UNet.InitialValues(specs[i], (uint)i, 99);
            double bound = specs[i].Init.Bound(specs[i].Init.NearZero ? UNet.NearZeroGain : 1.0);
            foreach (int j in new[] { 0, 1, 2, 3, 5, values.Length - 1 })
                Assert.That(values[j], Is.EqualTo((float)bound * (2f * Philox.Uniform(99, (uint)i, (ulong)j) - 1f)), $"{specs[i].Name}[{j}]");
        }
    }

    [Test]
    public void InitialValuesFollowTheDesign()
    {
        var config = UNetConfig.Small(16, 3);
        using var net = new UNet(TestDevice.Cpu, config, seed: 11);
        var specs = UNetLayout.Plan(config).Parameters;
        int nearZeroLayers = 0;
        for (int i = 0; i < specs.Count; i++)
        {
            var s = specs[i];
            var v = net.Parameters[i].ToArray();
            if (s.Name.EndsWith(".bias"))
            {
                Assert.That(s.Init.Kind, Is.EqualTo(InitKind.Zeros), s.Name);
                Assert.That(v, Is.All.EqualTo(0f), s.Name);
                continue;
            }
            if (s.Name.Contains("norm"))
            {
                Assert.That(v, Is.All.EqualTo(1f), s.Name + ": GroupNorm γ = 1");
                continue;
            }
            Assert.That(s.Init.Kind, Is.EqualTo(InitKind.XavierUniform), s.Name);
            // fan_in = Cin·K·K, fan_out = Cout·K·K (linears: in, out).
            int fanIn = s.Shape.Length == 4 ? s.Shape[1] * s.Shape[2] * s.Shape[3] : s.Shape[1];
            int fanOut = s.Shape.Length == 4 ? s.Shape[0] * s.Shape[2] * s.Shape[3] : s.Shape[0];
            double xavier = Math.Sqrt(6.0 / (fanIn + fanOut));
            double maxAbs = v.Max(Math.Abs);
            double meanSquare = v.Average(x => (double)x * x);
            bool nearZero = IsNearZeroLayer(s.Name);
            Assert.That(s.Init.NearZero, Is.EqualTo(nearZero), s.Name);
            double bound = nearZero ? 1e-5 * xavier : xavier;
            if (nearZero) nearZeroLayers++;
            Assert.That(maxAbs, Is.LessThanOrEqualTo(bound * (1 + 1e-6)), s.Name);
            Assert.That(maxAbs, Is.GreaterThan(0.0), s.Name + " is not all zero");
            if (nearZero) Assert.That(maxAbs, Is.LessThan(1e-5), s.Name + " is near zero");
            if (v.Length >= 2000)
            {
                Assert.That(maxAbs, Is.GreaterThan(0.95 * bound), s.Name + " fills its range");
                Assert.That(meanSquare, Is.EqualTo(bound * bound / 3).Within(10).Percent, s.Name + ": variance of U(−b, b) is b²/3");
            }
        }
        // small: 2 + 2·3 down/up… every ResBlock's conv2, every attention's proj_out and the tail conv.
        int resBlocks = 3 * 2 + 2 + 3 * 3, attentions = 2 + 1 + 3;
        Assert.That(nearZeroLayers, Is.EqualTo(resBlocks + attentions + 1));
    }
}
