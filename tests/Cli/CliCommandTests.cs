using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using IlgpuDdpm.Cli;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Images;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;
using SixLabors.ImageSharp;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>
/// The <c>ddpm</c> commands end to end, in-process on the CPU accelerator: one tiny training run (8×8
/// images, T = 20, 4 steps of 4 images) made once, then sample, eval, forward, resume and interrupt on it.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class CliCommandTests
{
    private string root = "";
    private string data = "";
    private string run = "";
    private CliResult trained = null!;

    private const int Size = 8;

    /// <summary>The options of the base run (without --out / --steps).</summary>
    private string[] TrainArgs(string outDir, int steps, params string[] extra) =>
    [
        "train", "--data", data, "--preset", "tiny", "--steps", steps.ToString(CultureInfo.InvariantCulture), "--batch", "4",
        "--timesteps", "20", "--warmup", "2", "--ema", "0.5", "--sample-every", "2", "--sample-count", "4", "--sample-steps", "5",
        "--checkpoint-every", "2", "--log-every", "1", "--print-every", "1", "--device", "cpu", "--seed", "7", "--out", outDir, .. extra,
    ];

    [OneTimeSetUp]
    public void TrainOnce()
    {
        root = CliHarness.NewTempFolder("commands");
        data = CliHarness.WriteIdxDataset(Path.Combine(root, "data"), count: 32, testCount: 8, size: Size);
        run = Path.Combine(root, "run");
        trained = CliHarness.Run(TrainArgs(run, steps: 4));
    }

    [OneTimeTearDown]
    public void DeleteFolder()
    {
        try { Directory.Delete(root, recursive: true); }
        catch (IOException) { }
    }

    // ------------------------------------------------------------------ train

    [Test]
    public void Train_WritesEveryFileOfTheRunFolder()
    {
        Assert.That(trained.ExitCode, Is.Zero, trained.ToString());
        Assert.That(trained.Error, Is.Empty);
        foreach (var file in new[] { "config.json", "metrics.jsonl", "loss.png", Checkpoint.ManifestFile })
            Assert.That(File.Exists(Path.Combine(run, file)), Is.True, file);
        var pair = Checkpoint.Locate(run);
        Assert.That(File.Exists(pair.ModelFile) && File.Exists(pair.StateFile), Is.True, pair.ToString());
        Assert.That(File.Exists(Path.Combine(run, "samples", "step-000002.png")), Is.True);
        Assert.That(File.Exists(Path.Combine(run, "samples", "step-000004.png")), Is.True);
        Assert.That(Directory.GetFiles(Path.Combine(run, "samples")), Has.Length.EqualTo(2));

        // The sample grid holds --sample-count images of the data's size.
        var (w, h, _, _) = ImageGrid.Layout(4, Size, Size, null, 2);
        var info = Image.Identify(Path.Combine(run, "samples", "step-000004.png"));
        Assert.That((info.Width, info.Height), Is.EqualTo((w, h)));
        var plot = Image.Identify(Path.Combine(run, "loss.png"));
        Assert.That(plot.Width, Is.GreaterThan(0));

        // Plain progress lines (output is not a terminal) for every step, and the summary line.
        for (int s = 1; s <= 4; s++) Assert.That(trained.Output, Does.Contain($"step {s}/4"));
        Assert.That(trained.Output, Does.Contain("img/s").And.Contain("ETA").And.Contain("done: step 4"));
    }

    [Test]
    public void Train_ConfigJsonHoldsOptionsModelAndDevice()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "config.json")));
        var c = doc.RootElement;
        Assert.That(c.GetProperty("preset").GetString(), Is.EqualTo("tiny"));
        Assert.That(c.GetProperty("steps").GetInt64(), Is.EqualTo(4));
        Assert.That(c.GetProperty("batch").GetInt32(), Is.EqualTo(4));
        Assert.That(c.GetProperty("timesteps").GetInt32(), Is.EqualTo(20));
        Assert.That(c.GetProperty("schedule").GetString(), Is.EqualTo("linear"));
        Assert.That(c.GetProperty("seed").GetUInt64(), Is.EqualTo(7));
        Assert.That(c.GetProperty("lr").GetDouble(), Is.EqualTo(2e-4));
        Assert.That(c.GetProperty("data").GetString(), Is.EqualTo(data));
        Assert.That(c.GetProperty("images").GetInt32(), Is.EqualTo(32));
        Assert.That(c.GetProperty("device").GetString(), Does.StartWith("Cpu"));
        var model = c.GetProperty("model");
        Assert.That(model.GetProperty("ch").GetInt32(), Is.EqualTo(16));
        Assert.That(model.GetProperty("image_size").GetInt32(), Is.EqualTo(Size));
        Assert.That(c.GetProperty("parameters").GetInt64(), Is.GreaterThan(1000));
    }

    [Test]
    public void Train_MetricsJsonlHasOneLinePerLoggedStep()
    {
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        Assert.That(lines, Has.Length.EqualTo(4));
        for (int i = 0; i < lines.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            var m = doc.RootElement;
            Assert.That(m.GetProperty("step").GetInt64(), Is.EqualTo(i + 1));
            double loss = m.GetProperty("loss").GetDouble();
            Assert.That(double.IsFinite(loss) && loss > 0, Is.True, $"loss {loss}");
            Assert.That(m.GetProperty("grad_norm").GetDouble(), Is.GreaterThan(0));
            Assert.That(m.GetProperty("lr").GetDouble(), Is.GreaterThan(0).And.LessThanOrEqualTo(2e-4));
            Assert.That(m.GetProperty("images_per_s").GetDouble(), Is.GreaterThanOrEqualTo(0));
        }
    }

    [Test]
    public void Train_CheckpointLoadsAtTheFinalStep()
    {
        using var loaded = Checkpoint.Load(TestDevice.Cpu, run);
        Assert.That(loaded.Step, Is.EqualTo(4));
        Assert.That(loaded.Config.ImageSize, Is.EqualTo(Size));
        Assert.That(loaded.Schedule.Timesteps, Is.EqualTo(20));
    }

    [Test]
    public void Train_RefusesToOverwriteARunWithoutResume()
    {
        var r = CliHarness.Run(TrainArgs(run, steps: 2));
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "--resume");
    }

    [Test]
    public void Train_ForMinutesStopsOnTheClock()
    {
        string folder = Path.Combine(root, "minutes");
        var r = CliHarness.Run("train", "--data", data, "--preset", "tiny", "--minutes", "0.001", "--batch", "4", "--timesteps", "20",
                               "--sample-every", "0", "--device", "cpu", "--out", folder);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("left").And.Contain("done: step"));
        using var loaded = Checkpoint.Load(TestDevice.Cpu, folder);
        Assert.That(loaded.Step, Is.GreaterThanOrEqualTo(1).And.LessThan(50));
        Assert.That(Directory.GetFiles(Path.Combine(folder, "samples")), Is.Empty);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "config.json")));
        Assert.That(doc.RootElement.GetProperty("minutes").GetDouble(), Is.EqualTo(0.001));
        Assert.That(doc.RootElement.TryGetProperty("steps", out _), Is.False);
    }

    // ------------------------------------------------------------------ resume and Ctrl-C

    [Test]
    public void Resume_ContinuesFromTheCheckpointStep()
    {
        string copy = Path.Combine(root, "resumed");
        CliHarness.CopyFolder(run, copy);
        var r = CliHarness.Run("train", "--resume", copy, "--steps", "6", "--device", "cpu", "--sample-count", "2", "--seed", "7");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("at step 4"));
        var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(copy, "config.json"))).RootElement;
        Assert.That(config.GetProperty("sample_count").GetInt32(), Is.EqualTo(2), "how often and how much to write may change on resume");
        Assert.That(r.Output, Does.Contain("step 5/6").And.Contain("step 6/6"));
        Assert.That(r.Output, Does.Not.Contain("step 1/6"));
        using (var loaded = Checkpoint.Load(TestDevice.Cpu, copy)) Assert.That(loaded.Step, Is.EqualTo(6));
        var steps = File.ReadAllLines(Path.Combine(copy, "metrics.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToArray();
        Assert.That(steps, Is.EqualTo(new long[] { 1, 2, 3, 4, 5, 6 }));
        Assert.That(File.Exists(Path.Combine(copy, "samples", "step-000006.png")), Is.True);
    }

    [Test]
    public void Resume_OfATwoStepRunMatchesTheFourStepRunBitForBit()
    {
        string split = Path.Combine(root, "split");
        var first = CliHarness.Run(TrainArgs(split, steps: 2));
        Assert.That(first.ExitCode, Is.Zero, first.ToString());
        var second = CliHarness.Run("train", "--resume", split, "--steps", "4");
        Assert.That(second.ExitCode, Is.Zero, second.ToString());

        var a = SafeTensors.Read(Checkpoint.ModelPath(run));
        var b = SafeTensors.Read(Checkpoint.ModelPath(split));
        Assert.That(b.Tensors.Keys, Is.EquivalentTo(a.Tensors.Keys));
        foreach (var (name, t) in a.Tensors)
            Assert.That(b.Tensors[name].Floats, Is.EqualTo(t.Floats), name);
    }

    [Test]
    public void Resume_RefusesToChangeTheModel()
    {
        string copy = Path.Combine(root, "changed");
        CliHarness.CopyFolder(run, copy);
        var r = CliHarness.Run("train", "--resume", copy, "--steps", "6", "--preset", "small");
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "--preset");
        r = CliHarness.Run("train", "--resume", copy, "--steps", "6", "--lr", "0.5");
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "--lr 0.5 differs from the run's");
    }

    [Test]
    public void Resume_WithoutAFolderIsAUsageError()
    {
        var r = CliHarness.Run("train", "--resume");
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "--resume");
    }

    [Test]
    public void CtrlC_SavesACheckpointExitsWith130AndResumes()
    {
        string folder = Path.Combine(root, "interrupted");
        using var interrupt = new CancellationTokenSource();
        interrupt.Cancel(); // "Ctrl-C" already pressed: the first step finishes, then the run saves and stops
        var r = CliHarness.Run(interrupt.Token, TrainArgs(folder, steps: 4));
        Assert.That(r.ExitCode, Is.EqualTo(Program.InterruptedExitCode), r.ToString());
        Assert.That(r.Output, Does.Contain("interrupted at step 1").And.Contain("--resume"));
        using (var loaded = Checkpoint.Load(TestDevice.Cpu, folder)) Assert.That(loaded.Step, Is.EqualTo(1));

        var resumed = CliHarness.Run("train", "--out", folder, "--resume");
        Assert.That(resumed.ExitCode, Is.Zero, resumed.ToString());
        using (var loaded = Checkpoint.Load(TestDevice.Cpu, folder)) Assert.That(loaded.Step, Is.EqualTo(4));
    }

    // ------------------------------------------------------------------ sample

    [Test]
    public void Sample_WritesAGridOfTheRequestedSizeAndAGif()
    {
        string png = Path.Combine(root, "grid.png"), gif = Path.Combine(root, "reverse.gif");
        var r = CliHarness.Run("sample", "--checkpoint", run, "--n", "6", "--sampler", "ddim", "--steps", "5", "--seed", "3",
                               "--out", png, "--gif", gif, "--frames", "4", "--device", "cpu");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var (w, h, cols, rows) = ImageGrid.Layout(6, Size, Size, null, 2);
        Assert.That((cols, rows), Is.EqualTo((3, 2)));
        var info = Image.Identify(png);
        Assert.That((info.Width, info.Height), Is.EqualTo((w, h)));
        using var animation = Image.Load(gif);
        Assert.That((animation.Width, animation.Height), Is.EqualTo((w, h)));
        Assert.That(animation.Frames.Count, Is.EqualTo(4));
        Assert.That(r.Output, Does.Contain("4 frames"));
    }

    [Test]
    public void Sample_DdpmWithTheSameSeedGivesTheSameImage()
    {
        string a = Path.Combine(root, "a.png"), b = Path.Combine(root, "b.png"), c = Path.Combine(root, "c.png");
        Assert.That(CliHarness.Run("sample", "--checkpoint", run, "--n", "4", "--seed", "11", "--out", a).ExitCode, Is.Zero);
        Assert.That(CliHarness.Run("sample", "--checkpoint", Checkpoint.ModelPath(run), "--n", "4", "--seed", "11", "--out", b).ExitCode, Is.Zero);
        Assert.That(CliHarness.Run("sample", "--checkpoint", run, "--n", "4", "--seed", "12", "--variance", "small", "--raw-weights", "--out", c).ExitCode, Is.Zero);
        Assert.That(File.ReadAllBytes(b), Is.EqualTo(File.ReadAllBytes(a)));
        Assert.That(File.ReadAllBytes(c), Is.Not.EqualTo(File.ReadAllBytes(a)));
    }

    // ------------------------------------------------------------------ eval

    [Test]
    public void Eval_PrintsTheBoundTermByTermInBitsPerDim()
    {
        var r = CliHarness.Run("eval", "--checkpoint", run, "--data", data, "--n", "4", "--device", "cpu", "--seed", "1");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        double Value(string term)
        {
            var line = r.Output.Split('\n').First(l => l.Contains(term));
            var m = Regex.Match(line, @"(-?\d+\.\d+)");
            Assert.That(m.Success, Is.True, line);
            return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        double prior = Value("L_T"), terms = Value("Σ L_t-1"), decoder = Value("L_0"), total = Value("total");
        Assert.That(prior, Is.GreaterThanOrEqualTo(0));
        Assert.That(terms, Is.GreaterThanOrEqualTo(0));
        Assert.That(total, Is.GreaterThan(0));
        Assert.That(total, Is.EqualTo(prior + terms + decoder).Within(5e-4)); // the table rounds to 4 decimals
        Assert.That(r.Output, Does.Contain("L_simple"));
        Assert.That(r.Output, Does.Contain("4 of 8 test images"));
    }

    // ------------------------------------------------------------------ forward

    [TestCase("I64")]
    [TestCase("I32")]
    [TestCase("F32")]
    public void Forward_WritesEpsOfTheInputShape(string tType)
    {
        const int n = 3;
        var x = new float[n * Size * Size];
        var rng = new Random(5);
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        int[] steps = [0, 7, 19];
        SafeTensor t = tType switch
        {
            "I64" => SafeTensor.I64("t", [n], steps.Select(s => (long)s).ToArray()),
            "I32" => SafeTensor.I32("t", [n], steps),
            _ => SafeTensor.F32("t", [n], steps.Select(s => (float)s).ToArray()),
        };
        string input = Path.Combine(root, $"in-{tType}.safetensors"), output = Path.Combine(root, $"out-{tType}.safetensors");
        SafeTensors.Write(input, [SafeTensor.F32("x", [n, 1, Size, Size], x), t]);

        var r = CliHarness.Run("forward", "--checkpoint", run, "--input", input, "--output", output, "--device", "cpu");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var eps = SafeTensors.Read(output).Tensors["eps"];
        Assert.That(eps.Shape, Is.EqualTo(new[] { n, 1, Size, Size }));
        Assert.That(eps.Floats!.All(float.IsFinite), Is.True);
        Assert.That(eps.Floats!.Any(v => v != 0), Is.True);

        // Same input, same output: the network is deterministic and has no dropout here.
        string again = Path.Combine(root, $"again-{tType}.safetensors");
        Assert.That(CliHarness.Run("forward", "--checkpoint", run, "--input", input, "--output", again).ExitCode, Is.Zero);
        Assert.That(SafeTensors.Read(again).Tensors["eps"].Floats, Is.EqualTo(eps.Floats));
    }

    [Test]
    public void Forward_RejectsAnInputOfTheWrongShapeInOneLine()
    {
        string input = Path.Combine(root, "wrong.safetensors");
        SafeTensors.Write(input, [SafeTensor.F32("x", [2, 3, Size, Size], new float[2 * 3 * Size * Size]), SafeTensor.I64("t", [2], [1, 2])]);
        var r = CliHarness.Run("forward", "--checkpoint", run, "--input", input, "--output", Path.Combine(root, "never.safetensors"));
        CliHarness.AssertOneLineError(r, Program.FailureExitCode, "'x'", "[2, 3, 8, 8]", "[N, 1, 8, 8]");
        Assert.That(File.Exists(Path.Combine(root, "never.safetensors")), Is.False);
    }

    [Test]
    public void Forward_RejectsATimestepOutsideTheSchedule()
    {
        string input = Path.Combine(root, "late.safetensors");
        SafeTensors.Write(input, [SafeTensor.F32("x", [1, 1, Size, Size], new float[Size * Size]), SafeTensor.I64("t", [1], [20])]);
        var r = CliHarness.Run("forward", "--checkpoint", run, "--input", input, "--output", Path.Combine(root, "never2.safetensors"));
        CliHarness.AssertOneLineError(r, Program.FailureExitCode, "t[0]", "0..19");
    }

    // ------------------------------------------------------------------ summary, devices

    [Test]
    public void Summary_PrintsTheCifarModelWithItsParameterCount()
    {
        var r = CliHarness.Run("summary", "--preset", "ddpm-cifar10");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("35,746,307"));
        Assert.That(r.Output, Does.Contain("mid.attn").And.Contain("GFLOP"));
    }

    [Test]
    public void Summary_RejectsASizeThePresetCannotHandle()
    {
        var r = CliHarness.Run("summary", "--preset", "small", "--size", "30");
        CliHarness.AssertOneLineError(r, Program.FailureExitCode, "30", "divisible");
    }

    [Test]
    public void Devices_ListsTheCpuAndWhatAutoPicks()
    {
        var r = CliHarness.Run("devices");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Output, Does.Contain("Cpu").And.Contain("auto picks"));
    }

    // ------------------------------------------------------------------ bad input

    [Test]
    public void MissingCheckpointIsOneLine()
    {
        string missing = Path.Combine(root, "no-such-run");
        var r = CliHarness.Run("sample", "--checkpoint", missing, "--out", Path.Combine(root, "x.png"));
        CliHarness.AssertOneLineError(r, Program.FailureExitCode, "no-such-run");
    }

    [Test]
    public void CorruptCheckpointIsOneLine()
    {
        string folder = Path.Combine(root, "corrupt");
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, "model.safetensors"), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        var r = CliHarness.Run("eval", "--checkpoint", folder, "--data", data);
        CliHarness.AssertOneLineError(r, Program.FailureExitCode, "model.safetensors");
    }

    [Test]
    public void MissingDataIsOneLine()
    {
        var r = CliHarness.Run("train", "--data", Path.Combine(root, "no-such-data"), "--preset", "tiny", "--out", Path.Combine(root, "never"));
        CliHarness.AssertOneLineError(r, Program.FailureExitCode, "no-such-data");
    }

    [Test]
    public void ImageSizeNotFittingThePresetIsOneLine()
    {
        var r = CliHarness.Run("train", "--data", data, "--preset", "ddpm-cifar10", "--size", "12", "--out", Path.Combine(root, "never"));
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "ddpm-cifar10", "12");
    }

    [Test]
    public void UnavailableDeviceIsOneLine()
    {
        if (ComputeDevice.Enumerate().Any(d => d.Kind == DeviceKind.Cuda)) Assert.Ignore("this machine has a CUDA device");
        var output = new StringWriter();
        var error = new StringWriter();
        // The real device path (no test factory): ComputeDevice.Open("cuda") on a machine without CUDA.
        int code = Program.Run(["sample", "--device", "cuda", "--checkpoint", run, "--out", Path.Combine(root, "never.png")], output, error);
        CliHarness.AssertOneLineError(new CliResult(code, output.ToString(), error.ToString()), Program.FailureExitCode, "cuda");
    }

    [TestCase(new[] { "train", "--preset", "huge" }, "--preset")]
    [TestCase(new[] { "train", "--steps", "10", "--minutes", "2" }, "--minutes")]
    [TestCase(new[] { "train", "--steps", "-5" }, "--steps")]
    [TestCase(new[] { "train", "--batch", "0" }, "--batch")]
    [TestCase(new[] { "train", "--lr", "-0.1" }, "--lr")]
    [TestCase(new[] { "train", "--ema", "1.5" }, "--ema")]
    [TestCase(new[] { "train", "--schedule", "quadratic" }, "--schedule")]
    [TestCase(new[] { "train", "--timesteps", "1" }, "--timesteps")]
    [TestCase(new[] { "train", "--device", "tpu" }, "--device")]
    [TestCase(new[] { "train", "--steps", "many" }, "many")]
    [TestCase(new[] { "sample", "--n", "0", "--checkpoint", "x" }, "--n")]
    [TestCase(new[] { "sample", "--sampler", "euler", "--checkpoint", "x" }, "--sampler")]
    [TestCase(new[] { "sample" }, "--checkpoint")]
    [TestCase(new[] { "summary", "--preset", "medium" }, "--preset")]
    [TestCase(new[] { "forward", "--checkpoint", "x", "--input", "y" }, "--output")]
    [TestCase(new[] { "eval", "--checkpoint", "x", "--data", "y", "--n", "-1" }, "--n")]
    [TestCase(new[] { "selfcheck", "--device", "gpu" }, "--device")]
    [TestCase(new[] { "train", "--frobnicate" }, "--frobnicate")]
    [TestCase(new[] { "paint" }, "paint")]
    public void BadCommandLineIsAUsageError(string[] args, string mention)
    {
        var r = CliHarness.Run(args);
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, mention);
    }

    [Test]
    public void SampleStepsBeyondTIsAUsageError()
    {
        var r = CliHarness.Run("sample", "--checkpoint", run, "--sampler", "ddim", "--steps", "21", "--out", Path.Combine(root, "never.png"));
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "--steps", "20");
    }

    [Test]
    public void HelpPrintsUsageAndExitsZero()
    {
        var r = CliHarness.Run("train", "--help");
        Assert.That(r.ExitCode, Is.Zero);
        Assert.That(r.Output, Does.Contain("--sample-every").And.Contain("DDIM").And.Contain("--resume"));
    }
}
