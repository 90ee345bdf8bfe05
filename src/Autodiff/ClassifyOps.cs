using ILGPU;
using IlgpuDdpm.Kernels.Classify;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// Differentiable ops of the evaluation classifier (see <see cref="ClassifyKernels"/>): global average
/// pooling and the fused softmax cross-entropy loss.
/// </summary>
public static class ClassifyOps
{
    /// <summary>Global average pooling: x [N,C,H,W] → [N,C], the mean over H·W of each channel.</summary>
    public static Tensor GlobalAveragePool(this Tape tape, Tensor x)
    {
        if (x.Rank != 4)
            throw new ArgumentException($"global average pool: expected x [N, C, H, W], got {Tensor.ShapeText(x.Shape)}");
        int rows = x.Dim(0) * x.Dim(1), spatial = x.Dim(2) * x.Dim(3);
        var k = tape.Device.Kernels<ClassifyKernels>();
        var y = tape.NewTensor(x.Dim(0), x.Dim(1));
        k.GlobalAveragePool(x.View, y.View, rows, spatial);
        if (tape.NeedsGrad(x))
            tape.Record(y, dy => k.GlobalAveragePoolBackward(dy.View, tape.GradOf(x).View, rows, spatial));
        return y;
    }

    /// <summary>
    /// Mean softmax cross-entropy → [1]: (1/N) Σ_n −log softmax(logits_n)_{y_n} for logits [N,K] and the class
    /// indices <paramref name="labels"/> [N] on the device (each in 0..K−1; the caller checks them on the host).
    /// The gradient flows to the logits: (softmax − one-hot)/N.
    /// </summary>
    public static Tensor SoftmaxCrossEntropy(this Tape tape, Tensor logits, ArrayView<int> labels)
    {
        if (logits.Rank != 2)
            throw new ArgumentException($"softmax cross-entropy: expected logits [N, K], got {Tensor.ShapeText(logits.Shape)}");
        int rows = logits.Dim(0), classes = logits.Dim(1);
        if (labels.Length != rows)
            throw new ArgumentException($"softmax cross-entropy: expected {rows} labels (one per row), got {labels.Length}");
        var k = tape.Device.Kernels<ClassifyKernels>();
        var probs = tape.NewTensor(rows, classes);
        var rowLoss = tape.NewTensor(rows);
        var loss = tape.NewTensor(1);
        k.SoftmaxCrossEntropy(logits.View, labels, rowLoss.View, probs.View, loss.View, rows, classes);
        if (tape.NeedsGrad(logits))
            tape.Record(loss, dloss => k.SoftmaxCrossEntropyBackward(probs.View, labels, dloss.View, tape.GradOf(logits).View, rows, classes));
        return loss;
    }
}
