using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Random;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Autodiff;

/// <summary>
/// Every differentiable op, wired through the real <see cref="Tape"/>: the vector–Jacobian product that
/// <c>tape.Backward(y, upstream)</c> leaves in each input's gradient must match central finite differences
/// of Σ upstream·op(x) evaluated with the same ops on the device. The kernels' precision is proven against
/// double references in tests/Kernels; this fixture proves the ops record the right backward steps, route
/// each gradient to the right input and add (not overwrite) when a tensor is used twice.
/// </summary>
[TestFixture]
public sealed class OpGradientTests
{
    private const float H = 1e-2f;

    /// <summary>
    /// Runs <paramref name="op"/> on random inputs of <paramref name="shapes"/>, backpropagates a random
    /// upstream gradient and compares every input's gradient, at <paramref name="probes"/> random positions
    /// each, with (f(x + h e_i) − f(x − h e_i))/2h where f = Σ upstream·op(x).
    /// </summary>
    private static void CheckGradients(string what, int[][] shapes, Func<Tape, Tensor[], Tensor> op, int seed = 1, int probes = 10, double tolerance = 2e-2)
    {
        var device = TestDevice.Cpu;
        var hosts = shapes.Select((s, k) => TestData.Uniform(s.Aggregate(1, (a, b) => a * b), seed * 31 + k)).ToArray();
        var inputs = shapes.Select((s, k) => Tensor.FromArray(device, hosts[k], s)).ToArray();
        try
        {
            foreach (var x in inputs) x.RequireGrad();
            var tape = new Tape(device) { Training = true };
            var y = op(tape, inputs);
            var upstream = TestData.Uniform(y.Length, seed + 1000);
            tape.Backward(y, upstream);
            var analytic = inputs.Select(x => x.Grad!.ToArray()).ToArray();

            double Objective()
            {
                var t = new Tape(device) { Training = true };
                using var _ = t.NoGrad();
                var values = op(t, inputs).ToArray();
                t.Clear();
                double s = 0;
                for (int i = 0; i < values.Length; i++) s += (double)upstream[i] * values[i];
                return s;
            }

            var rng = new System.Random(seed);
            for (int k = 0; k < inputs.Length; k++)
            {
                double scale = analytic[k].Average(v => Math.Abs((double)v)) + 1e-3;
                for (int probe = 0; probe < Math.Min(probes, hosts[k].Length); probe++)
                {
                    int i = rng.Next(hosts[k].Length);
                    float keep = hosts[k][i];
                    hosts[k][i] = keep + H; inputs[k].CopyFrom(hosts[k]); double plus = Objective();
                    hosts[k][i] = keep - H; inputs[k].CopyFrom(hosts[k]); double minus = Objective();
                    hosts[k][i] = keep; inputs[k].CopyFrom(hosts[k]);
                    double numeric = (plus - minus) / (2 * H);
                    Assert.That(analytic[k][i], Is.EqualTo(numeric).Within(tolerance * (Math.Abs(numeric) + scale)),
                        $"{what}: d/d input{k}[{i}] (tape {analytic[k][i]}, finite difference {numeric})");
                }
            }
        }
        finally
        {
            foreach (var x in inputs) x.Dispose();
        }
    }

    [Test]
    public void Conv2dStride1Padding1() =>
        CheckGradients("conv 3×3", [[2, 3, 5, 6], [4, 3, 3, 3], [4]], (t, x) => t.Conv2d(x[0], x[1], x[2]));

    [Test]
    public void Conv2dStride2AndOneByOne() =>
        CheckGradients("conv 3×3 s2 then 1×1", [[1, 2, 7, 7], [3, 2, 3, 3], [3], [2, 3, 1, 1]],
            (t, x) => t.Conv2d(t.Conv2d(x[0], x[1], x[2], stride: 2), x[3], null));

    [Test]
    public void LinearAndBatchedMatmulWithTransposes()
    {
        CheckGradients("linear", [[3, 5], [4, 5], [4]], (t, x) => t.Linear(x[0], x[1], x[2]));
        CheckGradients("bmm Aᵀ·Bᵀ", [[2, 4, 3], [2, 5, 4]], (t, x) => t.BatchedMatmul(x[0], x[1], transposeA: true, transposeB: true, alpha: 0.5f));
    }

    [Test]
    public void SoftmaxAndAttention()
    {
        CheckGradients("softmax", [[3, 7]], (t, x) => t.Softmax(x[0]));
        CheckGradients("attention", [[2, 4, 5], [2, 4, 5], [2, 4, 5]], (t, x) => t.Attention(x[0], x[1], x[2]));
    }

    [Test]
    public void GroupNormWithAffine() =>
        CheckGradients("group norm", [[2, 6, 3, 3], [6], [6]], (t, x) => t.GroupNorm(x[0], x[1], x[2], groups: 3));

    [Test]
    public void ElementwiseOps()
    {
        CheckGradients("silu", [[2, 3, 4]], (t, x) => t.Silu(x[0]));
        CheckGradients("gelu (Unary<GeluOp>)", [[2, 3, 4]], (t, x) => t.Unary(x[0], new GeluOp()));
        CheckGradients("x + x (a tensor used twice accumulates)", [[2, 5]], (t, x) => t.Add(x[0], t.Scale(x[0], 3f)));
        CheckGradients("channel vector", [[2, 3, 2, 2], [2, 3]], (t, x) => t.AddChannelVector(x[0], x[1]));
        CheckGradients("concat", [[2, 2, 3, 3], [2, 3, 3, 3]], (t, x) => t.Concat(x[0], x[1]));
        CheckGradients("upsample", [[1, 2, 3, 2]], (t, x) => t.Upsample2x(x[0]));
        CheckGradients("dropout (training)", [[4, 8]], (t, x) => t.Dropout(x[0], 0.3f, new PhiloxKey(9, 3, 0)));
        CheckGradients("reshape", [[2, 6]], (t, x) => t.Silu(t.Reshape(x[0], 3, 4)));
    }

    [Test]
    public void Reductions()
    {
        CheckGradients("mse", [[3, 4], [3, 4]], (t, x) => t.MseLoss(x[0], x[1]));
        CheckGradients("sum + mean", [[5, 3]], (t, x) => t.Add(t.Sum(x[0]), t.Mean(t.Silu(x[0]))));
    }

    [Test]
    public void ClassifierOps()
    {
        CheckGradients("global average pool", [[2, 3, 4, 5]], (t, x) => t.GlobalAveragePool(x[0]));
        using var labels = TestDevice.Cpu.Pool.Rent<int>(4);
        labels.CopyFrom([2, 0, 4, 2]);
        CheckGradients("softmax cross-entropy", [[4, 5]], (t, x) => t.SoftmaxCrossEntropy(t.Scale(x[0], 3f), labels.View));
    }
}
