using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// Losses and full reductions to a [1] tensor (see <see cref="ReduceKernels"/>): deterministic, the same
/// bits on every run of one accelerator.
/// </summary>
public static class LossOps
{
    /// <summary>
    /// Mean squared error: [1] = (1/n) Σ (prediction − target)² over all n elements (shapes must match).
    /// The gradient flows to prediction, and to target too if it requires one.
    /// </summary>
    public static Tensor MseLoss(this Tape tape, Tensor prediction, Tensor target)
    {
        if (!prediction.SameShape(target))
            throw new ArgumentException($"mse loss: prediction {Tensor.ShapeText(prediction.Shape)} and target {Tensor.ShapeText(target.Shape)} must have the same shape");
        var k = tape.Device.Kernels<ReduceKernels>();
        float scale = 1f / prediction.Length;
        var loss = tape.NewTensor(1);
        k.SumOfSquaredDifferences(prediction.View, target.View, loss.View, scale);
        if (tape.NeedsGrad(prediction, target))
            tape.Record(loss, dloss =>
            {
                if (prediction.RequiresGrad) k.SumOfSquaredDifferencesBackward(prediction.View, target.View, dloss.View, tape.GradOf(prediction).View, scale);
                if (target.RequiresGrad) k.SumOfSquaredDifferencesBackward(prediction.View, target.View, dloss.View, tape.GradOf(target).View, scale, withRespectToB: true);
            });
        return loss;
    }

    /// <summary>Sum of all elements → [1].</summary>
    public static Tensor Sum(this Tape tape, Tensor x) => ScaledSum(tape, x, 1f);

    /// <summary>Mean of all elements → [1].</summary>
    public static Tensor Mean(this Tape tape, Tensor x) => ScaledSum(tape, x, 1f / x.Length);

    private static Tensor ScaledSum(Tape tape, Tensor x, float scale)
    {
        var k = tape.Device.Kernels<ReduceKernels>();
        var y = tape.NewTensor(1);
        k.Sum(x.View, y.View, scale);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => k.SumBackward(dy.View, tape.GradOf(x).View, scale));
        return y;
    }
}
