using IlgpuDdpm.Diffusion.Evaluation;
using IlgpuDdpm.Network;
using IlgpuDdpm.Tests.Data;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>
/// <c>ddpm classifier train|eval</c>, <c>ddpm score</c> (both forms) and <c>ddpm train --score-every</c> end to end
/// on 8×8 IDX data with labels, in-process on the CPU accelerator, and their one-line errors.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class QualityCommandTests
{
    private const int Size = 8;
    private string root = "";
    private string data = "";
    private string classifier = "";
    private CliResult trained = null!;

    private string[] ClassifierArgs(string output) =>
        ["classifier", "train", "--data", data, "--out", output, "--steps", "3", "--batch", "8", "--seed", "3", "--device", "cpu"];

    private static void WriteLabels(string path, int count) =>
        File.WriteAllBytes(path, IdxFiles.Build(0x801, [count], Enumerable.Range(0, count).Select(i => (byte)(i % 3)).ToArray()));

    private static string WritePngs(string folder, int count, int size)
    {
        Directory.CreateDirectory(folder);
        for (int n = 0; n < count; n++)
        {
            using var image = new Image<L8>(size, size);
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++) image[x, y] = new L8((byte)((x * 31 + y * 17 + n * 13) & 255));
            image.SaveAsPng(Path.Combine(folder, $"{n:D3}.png"));
        }
        return folder;
    }

    [OneTimeSetUp]
    public void TrainClassifier()
    {
        root = CliHarness.NewTempFolder("quality");
        data = CliHarness.WriteIdxDataset(Path.Combine(root, "data"), count: 32, testCount: 16, size: Size);
        WriteLabels(Path.Combine(data, "train-labels-idx1-ubyte"), 32);
        WriteLabels(Path.Combine(data, "t10k-labels-idx1-ubyte"), 16);
        classifier = Path.Combine(root, "classifier.safetensors");
        trained = CliHarness.Run(ClassifierArgs(classifier));
    }

    [OneTimeTearDown]
    public void DeleteFolder()
    {
        try { Directory.Delete(root, recursive: true); }
        catch (IOException) { }
    }

    [Test]
    public void ClassifierTrain_WritesTheFileAndPrintsTheAccuracy_AndRepeatsBitForBit()
    {
        Assert.That(trained.ExitCode, Is.Zero, trained.ToString());
        Assert.That(trained.Output, Does.Match(@"accuracy [01]\.\d{4}"));
        Assert.That(ClassifierFile.ReadMetadata(classifier, "seed"), Is.EqualTo("3"));
        string again = Path.Combine(root, "again.safetensors");
        var r = CliHarness.Run(ClassifierArgs(again));
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(File.ReadAllBytes(again), Is.EqualTo(File.ReadAllBytes(classifier)), "the same command gives the same bytes");

        var eval = CliHarness.Run("classifier", "eval", "--classifier", classifier, "--data", data, "--device", "cpu");
        Assert.That(eval.ExitCode, Is.Zero, eval.ToString());
        Assert.That(eval.Output, Does.Match(@"accuracy [01]\.\d{4}"));
    }

    [Test]
    public void ClassifierTrain_RefusesDataWithoutLabelsAndAnExistingOutput()
    {
        string unlabelled = CliHarness.WriteIdxDataset(Path.Combine(root, "unlabelled"), count: 8, testCount: 4, size: Size);
        var r = CliHarness.Run("classifier", "train", "--data", unlabelled, "--out", Path.Combine(root, "never.safetensors"), "--device", "cpu");
        CliHarness.AssertOneLineError(r, 1, "train-labels-idx1-ubyte");
        Assert.That(File.Exists(Path.Combine(root, "never.safetensors")), Is.False);

        var exists = CliHarness.Run(ClassifierArgs(classifier));
        CliHarness.AssertOneLineError(exists, 2, "exists");
    }

    [Test]
    public void ScoreImages_PrintsFcdKidAndTheFloor()
    {
        string pngs = WritePngs(Path.Combine(root, "pngs"), 12, Size);
        var r = CliHarness.Run("score", "--images", pngs, "--n", "10", "--data", data, "--classifier", classifier, "--device", "cpu");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Match(@"(?m)^fcd \d+\.\d{4}$"));
        Assert.That(r.Output, Does.Match(@"(?m)^kid -?\d+\.\d{6} ± \d+\.\d{6}$"));
        Assert.That(r.Output, Does.Match(@"(?m)^real-vs-real fcd \d+\.\d{4} kid -?\d+\.\d{6}$"));
    }

    [Test]
    public void Score_RefusesBadInputInOneLine()
    {
        string small = WritePngs(Path.Combine(root, "small"), 12, 6);
        CliHarness.AssertOneLineError(CliHarness.Run("score", "--images", small, "--n", "10", "--data", data, "--classifier", classifier, "--device", "cpu"), 1, "1x6x6", "1x8x8");
        string few = WritePngs(Path.Combine(root, "few"), 4, Size);
        CliHarness.AssertOneLineError(CliHarness.Run("score", "--images", few, "--n", "10", "--data", data, "--classifier", classifier, "--device", "cpu"), 1, "fewer than --n 10");
        CliHarness.AssertOneLineError(CliHarness.Run("score", "--n", "10", "--classifier", classifier), 2, "--checkpoint", "--images");
        CliHarness.AssertOneLineError(CliHarness.Run("score", "--images", few, "--classifier", Path.Combine(root, "none.safetensors")), 1, "none.safetensors");
    }

    [Test]
    public void TrainWithScoreEvery_LogsFcdAndKid_AndScoreCheckpointChecksTheImageShape()
    {
        string run = Path.Combine(root, "run");
        var r = CliHarness.Run("train", "--data", data, "--preset", "tiny", "--steps", "2", "--batch", "4", "--timesteps", "20", "--warmup", "1",
            "--sample-every", "0", "--sample-steps", "2", "--score-every", "1", "--score-n", "6", "--classifier", classifier,
            "--log-every", "1", "--device", "cpu", "--seed", "1", "--out", run);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        Assert.That(lines.Count(l => l.Contains("\"fcd\"") && l.Contains("\"kid\"")), Is.EqualTo(2), string.Join("\n", lines));
        using (var plot = Image.Load(Path.Combine(run, "loss.png")))
            Assert.That(plot.Height, Is.EqualTo(800), "loss plot plus the FCD and KID panels");

        var scored = CliHarness.Run("score", "--checkpoint", run, "--n", "6", "--sampler", "ddim", "--steps", "2", "--data", data, "--classifier", classifier, "--device", "cpu");
        Assert.That(scored.ExitCode, Is.Zero, scored.ToString());
        Assert.That(scored.Output, Does.Contain("fcd ").And.Contain("real-vs-real"));

        string other = Path.Combine(root, "other.safetensors");
        using (var c = new Classifier(TestDevice.Cpu, ClassifierConfig.ForImages(1, 4, 3)))
            ClassifierFile.Save(other, c);
        CliHarness.AssertOneLineError(CliHarness.Run("score", "--checkpoint", run, "--n", "6", "--data", data, "--classifier", other, "--device", "cpu"), 1, "1x8x8", "1x4x4");
    }
}
