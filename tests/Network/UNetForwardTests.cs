using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;
using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Network;

/// <summary>The U-Net's forward pass and its gradient through the tape (runs the ops on the CPU accelerator).</summary>
[TestFixture]
public sealed class UNetForwardTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    /// <summary>Runs one forward pass and returns ε̂ on the host (the tape is cleared).</summary>
    private static float[] Predict(UNet net, float[] x, int[] steps, bool training = false, PhiloxKey key = default)
    {
        int n = steps.Length, c = net.Config.InChannels, s = net.Config.ImageSize;
        using var input = Tensor.FromArray(Device, x, n, c, s, s);
        using var t = Device.Pool.Rent<int>(n);
        t.CopyFrom(steps);
        var tape = new Tape(Device) { Training = training };
        using (tape.NoGrad())
        {
            var y = net.Forward(tape, input, t.View, key);
            Assert.That(y.Shape, Is.EqualTo(new[] { n, c, s, s }), "ε̂ has the input's shape");
            var result = y.ToArray();
            tape.Clear();
            return result;
        }
    }

    private static void AssertFinite(float[] values, string what)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) Assert.Fail($"{what}: element {i} is {values[i]}");
    }

    [TestCase(1, 16, 3)]
    [TestCase(2, 28, 1)]
    public void TinyForwardGivesTheRightShapeAndFiniteValues(int batch, int size, int channels)
    {
        using var net = new UNet(Device, UNetConfig.Tiny(size, channels), seed: 1);
        long outstanding = Device.Pool.Outstanding;
        var x = TestData.Uniform(batch * channels * size * size, 3);
        var y = Predict(net, x, Enumerable.Range(0, batch).Select(i => 100 * i + 5).ToArray());
        AssertFinite(y, "ε̂");
        Assert.That(y.Any(v => v != 0f), Is.True, "output is not identically zero");
        Assert.That(y.Max(Math.Abs), Is.LessThan(1e-2f), "the tail conv starts near zero, so ε̂ starts near zero");
        Assert.That(Device.Pool.Outstanding, Is.EqualTo(outstanding), "the tape returned every intermediate to the pool");

        // With ordinary gains the output is O(1) and still finite.
        net.Initialize(1, nearZeroGain: 1f);
        var y1 = Predict(net, x, Enumerable.Range(0, batch).Select(i => 100 * i + 5).ToArray());
        AssertFinite(y1, "ε̂ (gain 1)");
        Assert.That(y1.Max(Math.Abs), Is.GreaterThan(1e-2f));
    }

    [Test]
    public void ImagesOfABatchDoNotInteractAndTheTimestepMatters()
    {
        var config = UNetConfig.Tiny(8, 2);
        using var net = new UNet(Device, config, seed: 2);
        net.Initialize(2, nearZeroGain: 1f);
        int per = 2 * 8 * 8;
        var x = TestData.Uniform(2 * per, 4);
        var both = Predict(net, x, [7, 400]);
        var first = Predict(net, x[..per], [7]);
        var second = Predict(net, x[per..], [400]);
        Check.Close(both[..per], first, 1e-4, 1e-5, "image 0 alone vs in a batch");
        Check.Close(both[per..], second, 1e-4, 1e-5, "image 1 alone vs in a batch");
        var otherT = Predict(net, x[..per], [8]);
        Assert.That(otherT, Is.Not.EqualTo(first), "a different timestep changes ε̂");
    }

    [Test]
    public void DropoutIsOffWhenNotTrainingAndSeededWhenTraining()
    {
        var config = UNetConfig.Tiny(8, 1) with { Dropout = 0.3f };
        using var net = new UNet(Device, config, seed: 3);
        net.Initialize(3, nearZeroGain: 1f);
        Assert.That(net.DropoutDraws(2), Is.EqualTo(2 * net.Layout.Layers.Where(l => l.Kind == LayerKind.ResBlock).Sum(l => (long)l.OutputShape[0] * l.OutputShape[1] * l.OutputShape[2])));
        var x = TestData.Uniform(2 * 64, 5);
        int[] t = [10, 20];
        var keyA = new PhiloxKey(1, 2, 0);
        var keyB = new PhiloxKey(1, 2, 1_000_000);
        var evalA = Predict(net, x, t, training: false, keyA);
        var evalB = Predict(net, x, t, training: false, keyB);
        Check.BitIdentical(evalA, evalB, "eval mode ignores the dropout key");
        var trainA = Predict(net, x, t, training: true, keyA);
        var trainA2 = Predict(net, x, t, training: true, keyA);
        var trainB = Predict(net, x, t, training: true, keyB);
        Check.BitIdentical(trainA, trainA2, "training with one key is repeatable");
        Assert.That(trainA, Is.Not.EqualTo(evalA), "dropout acts in training");
        Assert.That(trainA, Is.Not.EqualTo(trainB), "another key, another mask");
    }

    [Test]
    public void PredictOnHostArraysEqualsTheTapeForward()
    {
        var config = UNetConfig.Tiny(8, 2);
        using var net = new UNet(Device, config, seed: 6);
        net.Initialize(6, nearZeroGain: 1f);
        long outstanding = Device.Pool.Outstanding;
        var x = TestData.Uniform(3 * 2 * 8 * 8, 7);
        int[] t = [0, 55, 999];
        Check.BitIdentical(net.Predict(x, t), Predict(net, x, t), "Predict = Forward on a tape, no gradient, no dropout");
        Assert.That(Device.Pool.Outstanding, Is.EqualTo(outstanding), "Predict returns every buffer to the pool");
        var e = Assert.Throws<ArgumentException>(() => net.Predict(x, [1, 2]))!;
        Assert.That(e.Message, Is.EqualTo("model input of 384 values for 2 timesteps does not match the model: expected 2 × 2×8×8 values"));
    }

    [Test]
    public void BadInputsAreRefusedInOneLine()
    {
        using var net = new UNet(Device, UNetConfig.Tiny(8, 1), seed: 4);
        var tape = new Tape(Device);
        using var t = Device.Pool.Rent<int>(2);
        t.CopyFrom([1, 2]);
        using var wrong = Tensor.Zeros(Device, 2, 3, 8, 8);
        var e = Assert.Throws<ArgumentException>(() => net.Forward(tape, wrong, t.View, default))!;
        Assert.That(e.Message, Is.EqualTo("model input [2, 3, 8, 8] does not match the model: expected [N, 1, 8, 8]"));
        using var three = Tensor.Zeros(Device, 3, 1, 8, 8);
        e = Assert.Throws<ArgumentException>(() => net.Forward(tape, three, t.View, default))!;
        Assert.That(e.Message, Is.EqualTo("expected 3 timesteps (one per image), got 2"));
        tape.Clear();
    }

    [Test]
    public void SkipStackBalancesInTheForwardPassOfDeepConfigs()
    {
        // The forward throws if the stack is not empty at the end or a pop finds nothing; concat checks
        // that each skip has the right resolution. Several level counts and block counts, tiny widths.
        foreach (var (mult, blocks) in new[] { (new[] { 1 }, 1), (new[] { 1, 2, 2 }, 2), (new[] { 1, 1, 2, 2 }, 1) })
        {
            var config = new UNetConfig
            {
                ImageSize = 8, InChannels = 1, Channels = 8, ChannelMultipliers = mult, NumResBlocks = blocks,
                AttentionResolutions = [8 >> (mult.Length - 1)], Groups = 4,
            };
            using var net = new UNet(Device, config, seed: 5);
            var y = Predict(net, TestData.Uniform(64, 6), [1]);
            AssertFinite(y, $"mult [{string.Join(",", mult)}], {blocks} blocks");
        }
    }

    /// <summary>
    /// L(θ) = MSE(ε̂(x, t; θ), target). Compares ⟨∇L, d⟩ from the tape with the central difference
    /// (L(θ + h·d) − L(θ − h·d)) / 2h along a random direction d scaled to each parameter's magnitude —
    /// over all parameters at once and over each part of the network separately, so no part's gradient
    /// can hide behind another's.
    /// </summary>
    [Test]
    public void DirectionalDerivativeOfTheTinyLossMatchesTheTape([Values] Activation activation)
    {
        var config = UNetConfig.Tiny(8, 2) with { Activation = activation };
        using var net = new UNet(Device, config, seed: 21);
        net.Initialize(21, nearZeroGain: 1f); // the near-zero layers would block gradients to everything before them
        const int n = 2;
        int len = n * config.InChannels * config.ImageSize * config.ImageSize;
        using var x = Tensor.FromArray(Device, TestData.Uniform(len, 22), n, config.InChannels, config.ImageSize, config.ImageSize);
        using var target = Tensor.FromArray(Device, TestData.Uniform(len, 23), n, config.InChannels, config.ImageSize, config.ImageSize);
        using var t = Device.Pool.Rent<int>(n);
        t.CopyFrom([3, 917]);

        double Loss()
        {
            var tape = new Tape(Device);
            using (tape.NoGrad())
            {
                double l = tape.MseLoss(net.Forward(tape, x, t.View, default), target).ToScalar();
                tape.Clear();
                return l;
            }
        }

        // Analytic gradient.
        net.ZeroGrad();
        var gradTape = new Tape(Device);
        var loss = gradTape.MseLoss(net.Forward(gradTape, x, t.View, default), target);
        double l0 = loss.ToScalar();
        gradTape.Backward(loss);
        var theta = net.Parameters.Select(p => p.ToArray()).ToArray();
        var grad = net.Parameters.Select(p => p.Gradient.ToArray()).ToArray();
        for (int i = 0; i < grad.Length; i++)
            Assert.That(grad[i].Any(g => g != 0f), Is.True, $"{net.Parameters[i].Name} receives a gradient");

        // A random direction, each parameter's part scaled to its RMS (0.1 for all-zero biases/shifts).
        var direction = new float[theta.Length][];
        for (int i = 0; i < theta.Length; i++)
        {
            double rms = Math.Sqrt(theta[i].Average(v => (double)v * v));
            float scale = rms > 0 ? (float)rms : 0.1f;
            direction[i] = TestData.Uniform(theta[i].Length, 100 + i, scale);
        }

        // h·d is 0.3 % of each parameter's RMS: small enough that the O(h²) error of the central
        // difference stays near 1e-3 relative, large enough that float32 rounding of L does not matter.
        const double h = 3e-3;
        void Check(string part, Func<string, bool> inPart, double rtol)
        {
            double analytic = 0;
            for (int i = 0; i < theta.Length; i++)
                if (inPart(net.Parameters[i].Name))
                    for (int j = 0; j < theta[i].Length; j++) analytic += (double)grad[i][j] * direction[i][j];

            double Shifted(double sign)
            {
                for (int i = 0; i < theta.Length; i++)
                {
                    if (!inPart(net.Parameters[i].Name)) continue;
                    var shifted = new float[theta[i].Length];
                    for (int j = 0; j < shifted.Length; j++) shifted[j] = (float)(theta[i][j] + sign * h * direction[i][j]);
                    net.Parameters[i].CopyFrom(shifted);
                }
                double l = Loss();
                for (int i = 0; i < theta.Length; i++) net.Parameters[i].CopyFrom(theta[i]);
                return l;
            }

            double numeric = (Shifted(+1) - Shifted(-1)) / (2 * h);
            TestContext.Out.WriteLine($"{part,-6} analytic {analytic,14:G8}  numeric {numeric,14:G8}  rel {Math.Abs(numeric - analytic) / Math.Abs(analytic):G3}");
            Assert.That(Math.Abs(analytic), Is.GreaterThan(1e-6), $"{part}: the directional derivative is not trivially zero");
            Assert.That(numeric, Is.EqualTo(analytic).Within(rtol * Math.Abs(analytic)), $"{part}: ⟨∇L, d⟩ vs central difference");
        }

        Assert.That(Loss(), Is.EqualTo(l0).Within(1e-6 * l0), "no-grad forward equals the recorded one");
        Check("all", _ => true, 0.02);
        Check("temb", name => name.StartsWith("temb."), 0.03);
        Check("head", name => name.StartsWith("head."), 0.03);
        Check("down", name => name.StartsWith("down."), 0.03);
        Check("mid", name => name.StartsWith("mid."), 0.03);
        Check("up", name => name.StartsWith("up."), 0.03);
        Check("tail", name => name.StartsWith("tail."), 0.03);
        Check("attn", name => name.Contains(".attn"), 0.03);
        Check("biases", name => name.EndsWith(".bias"), 0.03);
    }
}
