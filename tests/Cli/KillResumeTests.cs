using System.Globalization;
using System.Text.Json;
using IlgpuDdpm.Cli;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>
/// Issue 11 items 1 and 4: <c>ddpm train</c> as a child process, killed with SIGKILL at 20 seeded random
/// moments and resumed each time, ends bit for bit where an uninterrupted run ends; SIGINT and SIGTERM save
/// and exit cleanly; a second trainer on the same folder is refused while the first finishes untouched.
/// Timing only decides where a kill lands, never whether the test passes: every wait is for an output line.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class KillResumeTests
{
    private const int Steps = 16, CheckpointEvery = 2, Kills = 20;
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(3);

    private string root = null!, data = null!, straight = null!;

    [OneTimeSetUp]
    public void TrainUninterrupted()
    {
        root = CliHarness.NewTempFolder("kill");
        data = CliHarness.WriteIdxDataset(Path.Combine(root, "data"), count: 16, testCount: 4, size: 8);
        straight = Path.Combine(root, "straight");
        using var reference = ChildDdpm.Start(TrainArgs(straight, resume: false));
        Assert.That(reference.WaitForExit(Patience), Is.Zero, reference.ToString());
    }

    [OneTimeTearDown]
    public void DeleteFolder()
    {
        try { Directory.Delete(root, recursive: true); }
        catch (IOException) { }
    }

    private string[] TrainArgs(string outDir, bool resume, int steps = Steps) => resume
        ? ["train", "--resume", outDir, "--steps", steps.ToString(CultureInfo.InvariantCulture)]
        : ["train", "--data", data, "--preset", "tiny", "--steps", steps.ToString(CultureInfo.InvariantCulture), "--batch", "2",
           "--timesteps", "20", "--warmup", "2", "--ema", "0.5", "--sample-every", "0", "--checkpoint-every", CheckpointEvery.ToString(CultureInfo.InvariantCulture),
           "--log-every", "1", "--print-every", "1", "--device", "cpu", "--seed", "13", "--out", outDir];

    [Test]
    public void ATwiceDeliveredSigtermStillSavesACheckpoint()
    {
        // Under `dotnet run` a SIGTERM sent to the process group (timeout, docker stop, systemd) reaches ddpm twice: once
        // directly and once forwarded by the SDK. The second must not end the process before the checkpoint is saved.
        string run = Path.Combine(root, "twice");
        using var child = ChildDdpm.Start(TrainArgs(run, resume: false));
        Assert.That(child.WaitFor(c => c.LastStep >= 1, Patience), Is.True, child.ToString());
        child.Signal(ChildDdpm.SigTerm);
        child.Signal(ChildDdpm.SigTerm);
        Assert.That(child.WaitForExit(Patience), Is.EqualTo(Program.InterruptedExitCode), child.ToString());
        Assert.That(child.Output, Does.Contain("interrupted at step").And.Contain("--resume"), child.ToString());
        Assert.That(CurrentStep(run), Is.GreaterThanOrEqualTo(1), child.ToString());
    }

    [Test]
    public void KilledTwentyTimesAndResumed_EndsBitForBitWhereAnUninterruptedRunEnds()
    {
        string killed = Path.Combine(root, "killed");

        var rng = new Random(20261201);
        int signals = 0;
        for (int round = 0; round < Kills + 2; round++)
        {
            bool resume = Checkpoint.Exists(killed);
            long before = resume ? CurrentStep(killed) : 0;
            using var child = ChildDdpm.Start(TrainArgs(killed, resume));
            // Rounds 0 and 1 send SIGINT and SIGTERM during training. Of the 20 SIGKILLs, about 70% land a random
            // time in the first 1.5 s (loading, taking the lock, reading the checkpoint, rewriting metrics.jsonl and
            // config.json, compiling the kernels) and cost little; the others 0-100 ms after the first or second
            // new step was reported (training, a checkpoint save, metrics), after the costly kernel compilation.
            // Near the end of the run every kill is an early one, so the run never finishes before the last kill.
            int signal = round == 0 ? ChildDdpm.SigInt : round == 1 ? ChildDdpm.SigTerm : ChildDdpm.SigKill;
            bool signalled = signal != ChildDdpm.SigKill;
            bool early = !signalled && (rng.Next(10) < 7 || before >= Steps - 4);
            long targetStep = before + 1 + rng.Next(2);
            int delayMs = early ? rng.Next(1500) : rng.Next(100);
            if (!early) child.WaitFor(c => c.LastStep >= targetStep, Patience);
            Thread.Sleep(delayMs);
            long seen = child.LastStep;
            if (child.HasExited) break; // the run got to the end first: nothing left to kill

            child.Signal(signal);
            int code = child.WaitForExit(Patience);
            signals++;
            if (signal != ChildDdpm.SigKill)
            {
                // SIGINT and SIGTERM: the current step finishes, a checkpoint is saved, exit code 130.
                Assert.That(code, Is.EqualTo(Program.InterruptedExitCode), child.ToString());
                Assert.That(child.Output, Does.Contain("interrupted at step").And.Contain("--resume"), child.ToString());
                Assert.That(CurrentStep(killed), Is.GreaterThanOrEqualTo(Math.Max(seen, 1)), child.ToString());
            }

            if (!Checkpoint.Exists(killed)) { Assert.That(seen, Is.LessThanOrEqualTo(CheckpointEvery), "no checkpoint although a later step than the first save was reported"); continue; }
            long after = AssertLoadable(killed);
            Assert.That(after, Is.GreaterThanOrEqualTo(seen - CheckpointEvery),
                $"round {round}: the run reported step {seen} but its checkpoint is at step {after}\n{child}");
            AssertMetricsParse(killed, allowTornLastLine: signal == ChildDdpm.SigKill);
        }
        Assert.That(signals, Is.EqualTo(Kills + 2), "every kill found the run still going");

        using (var last = ChildDdpm.Start(TrainArgs(killed, Checkpoint.Exists(killed))))
            Assert.That(last.WaitForExit(Patience), Is.Zero, last.ToString());
        Assert.That(CurrentStep(killed), Is.EqualTo(Steps));
        AssertMetricsParse(killed, allowTornLastLine: false);
        AssertSameTensors(Checkpoint.Locate(straight).ModelFile, Checkpoint.Locate(killed).ModelFile);
        AssertSameTensors(Checkpoint.Locate(straight).StateFile!, Checkpoint.Locate(killed).StateFile!);
    }

    [Test]
    public void SecondTrainerOnTheSameFolderIsRefused_AndTheFirstFinishesUntouched()
    {
        string folder = Path.Combine(root, "shared");
        using var first = ChildDdpm.Start(TrainArgs(folder, resume: false));
        Assert.That(first.WaitFor(c => c.LastStep >= 1, Patience), Is.True, first.ToString());

        // A second trainer, as a fresh run and as a resume: refused in one line naming the folder and the pid.
        foreach (var args in new[] { TrainArgs(folder, resume: false), TrainArgs(folder, resume: true, steps: Steps + 2) })
        {
            var second = CliHarness.Run(args);
            if (first.HasExited) Assert.Inconclusive("the first trainer finished before the second started");
            CliHarness.AssertOneLineError(second, Program.FailureExitCode, folder, $"pid {first.Pid}", "in use");
        }
        Assert.That(first.WaitForExit(Patience), Is.Zero, first.ToString());

        // Untouched: the same bits as the run that was alone, and a clean metrics.jsonl.
        AssertSameTensors(Checkpoint.Locate(straight).ModelFile, Checkpoint.Locate(folder).ModelFile);
        AssertSameTensors(Checkpoint.Locate(straight).StateFile!, Checkpoint.Locate(folder).StateFile!);
        AssertMetricsParse(folder, allowTornLastLine: false);
        Assert.That(MetricsSteps(folder), Is.EqualTo(Enumerable.Range(1, Steps).Select(i => (long)i)));
    }

    private static long CurrentStep(string run) => Checkpoint.TryReadManifest(run)?.Step ?? -1;

    /// <summary>Both files of the current pair load (the model, and the whole trainer with the pair check); returns its step.</summary>
    private static long AssertLoadable(string run)
    {
        using (var loaded = Checkpoint.Load(TestDevice.Cpu, run)) Assert.That(loaded.Step, Is.EqualTo(CurrentStep(run)));
        var trainer = Checkpoint.Resume(TestDevice.Cpu, run, null, out _, out string? runId);
        long step = trainer.Step;
        Assert.That(runId, Is.EqualTo(Checkpoint.TryReadManifest(run)!.RunId));
        trainer.Dispose();
        trainer.Diffusion.Dispose();
        trainer.Model.Dispose();
        return step;
    }

    private static long[] MetricsSteps(string run) =>
        File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToArray();

    /// <summary>Every line of metrics.jsonl parses (a SIGKILL may tear the last one; the resume drops it), steps increase.</summary>
    private static void AssertMetricsParse(string run, bool allowTornLastLine)
    {
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        long previous = 0;
        for (int i = 0; i < lines.Length; i++)
        {
            long step;
            try { step = JsonDocument.Parse(lines[i]).RootElement.GetProperty("step").GetInt64(); }
            catch (JsonException) when (allowTornLastLine && i == lines.Length - 1) { break; }
            Assert.That(step, Is.GreaterThan(previous), $"{run}/metrics.jsonl line {i + 1}: {lines[i]}");
            previous = step;
        }
    }

    private static void AssertSameTensors(string expectedFile, string actualFile)
    {
        var expected = SafeTensors.Read(expectedFile);
        var actual = SafeTensors.Read(actualFile);
        Assert.That(actual.Tensors.Keys, Is.EquivalentTo(expected.Tensors.Keys));
        foreach (var (name, t) in expected.Tensors)
            Assert.That(actual.Tensors[name].Bytes.SequenceEqual(t.Bytes), Is.True, $"{actualFile}: tensor {name} differs from the uninterrupted run");
        foreach (var key in new[] { "step", "data_epoch", "data_index", "options" })
            Assert.That(actual.Metadata.GetValueOrDefault(key), Is.EqualTo(expected.Metadata.GetValueOrDefault(key)), key);
    }
}
