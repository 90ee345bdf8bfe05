using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion.Evaluation;

/// <summary>Runs a trained <see cref="Classifier"/> over host images (no gradients): features and accuracy.</summary>
public static class ClassifierEvaluation
{
    /// <summary>Images per forward pass.</summary>
    public const int BatchSize = 200;

    /// <summary>
    /// The penultimate features of <paramref name="count"/> images ([count, C, S, S] in [−1, 1], the
    /// classifier's shape) as a row-major [count, FeatureDim] array of doubles.
    /// </summary>
    public static double[] Features(Classifier classifier, ReadOnlySpan<float> images, int count)
    {
        int d = classifier.Config.FeatureDim;
        var features = new double[(long)count * d];
        Run(classifier, images, count, (start, n, tape, feats) =>
        {
            var host = feats.ToArray();
            for (int i = 0; i < host.Length; i++) features[(long)start * d + i] = host[i];
        });
        return features;
    }

    /// <summary>The fraction of <paramref name="data"/> whose highest logit is its label.</summary>
    public static double Accuracy(Classifier classifier, LabelledImages data)
    {
        int classes = classifier.Config.Classes;
        long correct = 0;
        Run(classifier, data.Images.Data, data.Count, (start, n, tape, feats) =>
        {
            var logits = classifier.Logits(tape, feats).ToArray();
            for (int i = 0; i < n; i++)
            {
                int best = 0;
                for (int k = 1; k < classes; k++) if (logits[i * classes + k] > logits[i * classes + best]) best = k;
                if (best == data.Labels[start + i]) correct++;
            }
        });
        return (double)correct / data.Count;
    }

    private static void Run(Classifier classifier, ReadOnlySpan<float> images, int count, Action<int, int, Tape, Tensor> use)
    {
        var c = classifier.Config;
        int length = c.InChannels * c.ImageSize * c.ImageSize;
        if (count <= 0 || images.Length < (long)count * length)
            throw new ArgumentException($"classifier: expected {count} images of {c.InChannels}x{c.ImageSize}x{c.ImageSize} ({(long)count * length} values), got {images.Length} values");
        var tape = new Tape(classifier.Device);
        using var _ = tape.NoGrad();
        for (int start = 0; start < count; start += BatchSize)
        {
            int n = Math.Min(BatchSize, count - start);
            var x = tape.NewTensor(n, c.InChannels, c.ImageSize, c.ImageSize);
            x.CopyFrom(images.Slice(start * length, n * length));
            use(start, n, tape, classifier.Features(tape, x));
            tape.Clear();
        }
    }
}
