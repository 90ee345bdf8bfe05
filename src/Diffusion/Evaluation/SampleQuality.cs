using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion.Evaluation;

/// <summary>FCD and KID (mean ± standard deviation over subsets) of one set of images against the reference.</summary>
public readonly record struct QualityScore(double Fcd, double Kid, double KidStdDev, int Count);

/// <summary>
/// Scores images against a data set's test split on a classifier's penultimate features: the Fréchet
/// classifier distance and KID (<see cref="FeatureStatistics"/>). The reference statistics are computed
/// once, so a training run can score itself repeatedly. <see cref="Floor"/> scores a random subset of the
/// training split of the same size the same way: the value real images reach, without which the others
/// cannot be read. Scores are deterministic for a given seed.
/// </summary>
public sealed class SampleQuality : IDisposable
{
    /// <summary>KID subsets (as clean-fid and torch-fidelity average over, fewer to keep the host work small).</summary>
    public const int KidSubsets = 50;

    /// <summary>KID subset size (clean-fid's and torch-fidelity's default), capped at the number of images.</summary>
    public const int KidSubsetSize = 1000;

    private readonly double[] referenceMean;
    private readonly double[,] referenceCovariance;
    private readonly double[] referenceFeatures;
    private readonly int referenceCount;
    private readonly string dataSpec;
    private ImageDataset? train;

    /// <summary>
    /// Loads <paramref name="classifierPath"/> onto <paramref name="device"/> and computes the features of the test
    /// split of <paramref name="dataSpec"/> (which must have the classifier's image shape).
    /// </summary>
    public SampleQuality(ComputeDevice device, string classifierPath, string dataSpec)
    {
        ClassifierPath = classifierPath;
        this.dataSpec = dataSpec;
        var config = ClassifierFile.ReadConfig(classifierPath);
        var test = ImageDataset.Load(dataSpec, split: DatasetSplit.Test);
        CheckShape(config, test.Channels, test.Height, test.Width, test.Source);
        Classifier = ClassifierFile.Load(device, classifierPath);
        try
        {
            referenceCount = test.Count;
            referenceFeatures = ClassifierEvaluation.Features(Classifier, test.Data, test.Count);
            (referenceMean, referenceCovariance) = FeatureStatistics.MeanAndCovariance(referenceFeatures, referenceCount, Config.FeatureDim);
            ReferenceSource = test.Source;
        }
        catch
        {
            Classifier.Dispose();
            throw;
        }
    }

    /// <summary>The classifier file the features come from.</summary>
    public string ClassifierPath { get; }

    /// <summary>The classifier.</summary>
    public Classifier Classifier { get; }

    /// <summary>Its architecture (image shape, feature width).</summary>
    public ClassifierConfig Config => Classifier.Config;

    /// <summary>The test split's file or folder.</summary>
    public string ReferenceSource { get; }

    /// <summary>Number of reference (test) images.</summary>
    public int ReferenceCount => referenceCount;

    /// <summary>
    /// A one-line <see cref="DataException"/> unless images of <paramref name="channels"/>×<paramref name="height"/>×<paramref name="width"/>
    /// (from <paramref name="source"/>) have the classifier's shape.
    /// </summary>
    public static void CheckShape(ClassifierConfig config, int channels, int height, int width, string source)
    {
        if (channels != config.InChannels || height != config.ImageSize || width != config.ImageSize)
            throw new DataException($"{source}: images are {channels}x{height}x{width}; the classifier scores {config.InChannels}x{config.ImageSize}x{config.ImageSize} images");
    }

    /// <summary>FCD and KID of the first <paramref name="count"/> images ([count, C, S, S] in [−1, 1]) against the test split.</summary>
    public QualityScore Score(ReadOnlySpan<float> images, int count, int seed = 0)
    {
        int d = Config.FeatureDim;
        var features = ClassifierEvaluation.Features(Classifier, images, count);
        var (mean, cov) = FeatureStatistics.MeanAndCovariance(features, count, d);
        double fcd = FeatureStatistics.FrechetDistance(mean, cov, referenceMean, referenceCovariance);
        var (kid, sd) = FeatureStatistics.KernelInceptionDistance(features, count, referenceFeatures, referenceCount, d, KidSubsets, KidSubsetSize, seed);
        return new QualityScore(fcd, kid, sd, count);
    }

    /// <summary>The real-vs-real floor: <paramref name="count"/> training images chosen at random from <paramref name="seed"/>, scored as <see cref="Score"/>.</summary>
    public QualityScore Floor(int count, int seed = 0)
    {
        train ??= ImageDataset.Load(dataSpec, split: DatasetSplit.Train);
        if (count > train.Count) throw new DataException($"{train.Source}: holds {train.Count} images, fewer than the {count} the floor needs");
        var order = new int[train.Count];
        BatchSampler.Shuffle(order, (ulong)seed, 0);
        var images = new float[(long)count * train.ImageLength];
        for (int i = 0; i < count; i++) train.CopyImage(order[i], images.AsSpan(i * train.ImageLength, train.ImageLength));
        return Score(images, count, seed);
    }

    /// <summary>Frees the classifier.</summary>
    public void Dispose() => Classifier.Dispose();
}
