using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Evaluation;
using IlgpuDdpm.Network;
using IlgpuDdpm.Tests.Data;
using IlgpuDdpm.Tests.Diffusion;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Evaluation;

/// <summary>
/// The evaluation classifier end to end on a tiny synthetic labelled set (the four 8×8 shapes of
/// <see cref="SyntheticImages"/> with pixel noise, label = shape): it learns the set to 100 %, training is
/// bit-for-bit repeatable, a saved file loads back to the same features, and FCD on its features is 0 for
/// a set against itself and grows with the noise added to the images.
/// </summary>
[TestFixture]
public sealed class ClassifierTests
{
    private static readonly ClassifierConfig Tiny = new(1, SyntheticImages.Size, 4, [8, 16], 4);
    private static readonly ClassifierTrainingOptions Options = new() { BatchSize = 16, Steps = 60, LearningRate = 1e-2, WarmupSteps = 5, RandomFlip = false, Seed = 7 };
    private Classifier? trained;
    private LabelledImages? data;

    private static LabelledImages NoisyShapes(int count, int seed, double sigma = 0.3)
    {
        var rng = new System.Random(seed);
        var images = SyntheticImages.Batch(count);
        for (int i = 0; i < images.Length; i++) images[i] += (float)(sigma * (rng.NextDouble() * 2 - 1));
        var labels = Enumerable.Range(0, count).Select(i => (byte)(i % 4)).ToArray();
        return new LabelledImages(new ImageDataset(images, count, 1, SyntheticImages.Size, SyntheticImages.Size, "synthetic"), labels, 4);
    }

    private static Classifier Train(LabelledImages set, out float lastLoss)
    {
        using var trainer = new ClassifierTrainer(TestDevice.Cpu, Tiny, set, Options);
        lastLoss = 0;
        for (int s = 0; s < Options.Steps; s++) lastLoss = trainer.TrainStep();
        return trainer.TakeModel();
    }

    [OneTimeSetUp]
    public void TrainOnce()
    {
        data = NoisyShapes(64, 1);
        trained = Train(data, out _);
    }

    [OneTimeTearDown]
    public void Release() => trained?.Dispose();

    [Test]
    public void LearnsASmallSyntheticLabelledSetTo100Percent()
    {
        Assert.That(ClassifierEvaluation.Accuracy(trained!, data!), Is.EqualTo(1.0));
        Assert.That(ClassifierEvaluation.Accuracy(trained!, NoisyShapes(32, 2)), Is.EqualTo(1.0), "fresh noise on the same shapes");
    }

    [Test]
    public void TrainingIsRepeatableAndTheFileRoundTrips()
    {
        using var again = Train(data!, out _);
        for (int i = 0; i < again.Parameters.Count; i++)
            Check.BitIdentical(again.Parameters[i].ToArray(), trained!.Parameters[i].ToArray(), again.Parameters[i].Name);

        using var folder = new TempFolder();
        string path = folder.File("classifier.safetensors");
        ClassifierFile.Save(path, trained!, new Dictionary<string, string> { ["seed"] = "7" });
        var bytes = File.ReadAllBytes(path);
        ClassifierFile.Save(folder.File("again.safetensors"), again, new Dictionary<string, string> { ["seed"] = "7" });
        Assert.That(File.ReadAllBytes(folder.File("again.safetensors")), Is.EqualTo(bytes), "same training, same bytes");
        using var loaded = ClassifierFile.Load(TestDevice.Cpu, path);
        Assert.That(loaded.Config, Is.EqualTo(Tiny));
        Assert.That(ClassifierFile.ReadMetadata(path, "seed"), Is.EqualTo("7"));
        var images = data!.Images.Data;
        Assert.That(ClassifierEvaluation.Features(loaded, images, 8), Is.EqualTo(ClassifierEvaluation.Features(trained!, images, 8)));
    }

    [Test]
    public void FcdIsZeroForASetAgainstItselfAndGrowsWithNoise()
    {
        int d = Tiny.FeatureDim, n = 128;
        var reference = NoisyShapes(n, 3);
        var refFeatures = ClassifierEvaluation.Features(trained!, reference.Images.Data, n);
        Assert.That(FeatureStatistics.FrechetDistance(refFeatures, n, refFeatures, n, d), Is.EqualTo(0).Within(1e-9));

        var rng = new System.Random(4);
        var baseImages = NoisyShapes(n, 5).Images.Data;
        var noise = baseImages.Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))).ToArray();
        double previous = -1;
        foreach (var sigma in new[] { 0.0, 0.3, 0.6, 1.2, 2.4 })
        {
            var noisy = baseImages.Select((v, i) => v + (float)sigma * noise[i]).ToArray();
            double fcd = FeatureStatistics.FrechetDistance(ClassifierEvaluation.Features(trained!, noisy, n), n, refFeatures, n, d);
            Assert.That(fcd, Is.GreaterThan(previous), $"FCD at σ = {sigma}");
            previous = fcd;
        }
    }

    [Test]
    public void MissingLabelFileIsRefusedInOneLine()
    {
        using var folder = new TempFolder();
        IdxFiles.WriteImages(folder.File("train-images-idx3-ubyte"), 3, 4, 4);
        var e = Assert.Throws<DataException>(() => LabelledImages.Load(folder.Path, DatasetSplit.Train))!;
        Assert.That(e.Message, Does.Contain("train-labels-idx1-ubyte").And.Contain("label").And.Not.Contain("\n"));
    }

    [Test]
    public void WrongImageShapeIsRefusedInOneLine()
    {
        var e = Assert.Throws<DataException>(() => SampleQuality.CheckShape(Tiny, 3, 8, 8, "samples/"))!;
        Assert.That(e.Message, Does.Contain("3x8x8").And.Contain("1x8x8").And.Not.Contain("\n"));
        Assert.Throws<DataException>(() => new ClassifierTrainer(TestDevice.Cpu, Tiny with { ImageSize = 6 }, data!, Options).Dispose());
    }
}
