using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Diffusion;

/// <summary>Checkpoints round-trip bit-exactly, a resumed run equals an uninterrupted one bit for bit, and bad files are refused.</summary>
[TestFixture]
public sealed class CheckpointTests
{
    private string folder = null!;

    [SetUp]
    public void MakeFolder() => folder = Directory.CreateTempSubdirectory("ddpm-checkpoint-").FullName;

    [TearDown]
    public void RemoveFolder() => Directory.Delete(folder, recursive: true);

    private static readonly TrainingOptions Options = new() { BatchSize = 4, LearningRate = 1e-3, WarmupSteps = 2, Seed = 21, EmaDecay = 0.9, RandomFlip = true };

    private static ImageDataset Dataset() => new(SyntheticImages.Batch(6), 6, 1, SyntheticImages.Size, SyntheticImages.Size, "synthetic");

    /// <summary>Trains <paramref name="steps"/> steps, drawing batches from <paramref name="sampler"/>.</summary>
    private static void Run(Trainer trainer, BatchSampler sampler, int steps)
    {
        var batch = new float[sampler.BatchLength];
        for (int i = 0; i < steps; i++)
        {
            sampler.Next(batch);
            trainer.TrainStep(batch);
        }
    }

    private static (Trainer Trainer, BatchSampler Sampler) Fresh()
    {
        var device = TestDevice.Cpu;
        var model = new UNet(device, UNetConfig.Tiny(SyntheticImages.Size, 1), seed: 3);
        var diffusion = new GaussianDiffusion(device, NoiseSchedule.Linear(50, 2e-3, 0.4));
        return (new Trainer(model, diffusion, Options), new BatchSampler(Dataset(), Options.BatchSize, Options.Seed, Options.RandomFlip));
    }

    private static void DisposeAll(Trainer trainer)
    {
        trainer.Dispose();
        trainer.Diffusion.Dispose();
        trainer.Model.Dispose();
    }

    [Test]
    public void ResumedRunEqualsUninterruptedRunBitForBit()
    {
        var (straight, straightData) = Fresh();
        Run(straight, straightData, 6);

        var (first, firstData) = Fresh();
        Run(first, firstData, 3);
        Checkpoint.Save(folder, first, firstData.State);
        DisposeAll(first);

        var resumed = Checkpoint.Resume(TestDevice.Cpu, folder, null, out var position);
        Assert.That(resumed.Step, Is.EqualTo(3));
        var resumedData = new BatchSampler(Dataset(), Options.BatchSize, Options.Seed, Options.RandomFlip, position);
        Run(resumed, resumedData, 3);

        for (int i = 0; i < straight.Model.Parameters.Count; i++)
            Check.BitIdentical(resumed.Model.Parameters[i].ToArray(), straight.Model.Parameters[i].ToArray(), straight.Model.Parameters[i].Name);
        using var emaStraight = new UNet(TestDevice.Cpu, straight.Model.Config);
        using var emaResumed = new UNet(TestDevice.Cpu, straight.Model.Config);
        straight.CopyEmaInto(emaStraight);
        resumed.CopyEmaInto(emaResumed);
        for (int i = 0; i < emaStraight.Parameters.Count; i++)
            Check.BitIdentical(emaResumed.Parameters[i].ToArray(), emaStraight.Parameters[i].ToArray(), "EMA " + emaStraight.Parameters[i].Name);
        DisposeAll(straight);
        DisposeAll(resumed);
    }

    [Test]
    public void ModelRoundTripsBitExactlyWithRawAndEmaWeights()
    {
        var (trainer, data) = Fresh();
        Run(trainer, data, 2);
        Checkpoint.Save(folder, trainer, data.State);
        using (var raw = Checkpoint.Load(TestDevice.Cpu, folder, useEma: false))
        {
            Assert.That(raw.Step, Is.EqualTo(2));
            Assert.That(raw.UsedEma, Is.False);
            Assert.That(raw.Config, Is.EqualTo(trainer.Model.Config));
            Assert.That(raw.Schedule.Timesteps, Is.EqualTo(50));
            for (int i = 0; i < raw.Model.Parameters.Count; i++)
                Check.BitIdentical(raw.Model.Parameters[i].ToArray(), trainer.Model.Parameters[i].ToArray(), raw.Model.Parameters[i].Name);
        }
        using (var ema = Checkpoint.Load(TestDevice.Cpu, Checkpoint.ModelPath(folder)))
        {
            Assert.That(ema.UsedEma, Is.True);
            using var expected = new UNet(TestDevice.Cpu, trainer.Model.Config);
            trainer.CopyEmaInto(expected);
            for (int i = 0; i < ema.Model.Parameters.Count; i++)
                Check.BitIdentical(ema.Model.Parameters[i].ToArray(), expected.Parameters[i].ToArray(), "EMA " + expected.Parameters[i].Name);
        }
        DisposeAll(trainer);
    }

    [Test]
    public void MissingTruncatedOrMismatchedCheckpointsAreRefusedClearly()
    {
        Assert.That(() => Checkpoint.Load(TestDevice.Cpu, Path.Combine(folder, "nothing-here")),
            Throws.TypeOf<CheckpointException>().With.Message.Contains("no such checkpoint"));
        Assert.That(() => Checkpoint.Load(TestDevice.Cpu, folder),
            Throws.TypeOf<CheckpointException>().With.Message.Contains("no checkpoint.json or model.safetensors"));

        var (trainer, data) = Fresh();
        Checkpoint.Save(folder, trainer, data.State);
        DisposeAll(trainer);
        string file = Checkpoint.ModelPath(folder);
        var bytes = File.ReadAllBytes(file);

        File.WriteAllBytes(file, bytes[..(bytes.Length - 100)]);
        Assert.That(() => Checkpoint.Load(TestDevice.Cpu, folder), Throws.TypeOf<CheckpointException>().With.Message.Contains(file));

        // A tensor under a wrong name: the loader names it.
        var original = SafeTensors.Read(WriteBack(file, bytes));
        var renamed = original.InFileOrder.Select(t => t.Name == "head.weight" ? SafeTensor.F32("head.weights", t.Shape, t.Floats!) : t).ToList();
        SafeTensors.Write(file, renamed, original.Metadata);
        Assert.That(() => Checkpoint.Load(TestDevice.Cpu, folder, useEma: false),
            Throws.TypeOf<CheckpointException>().With.Message.Contains("'head.weight' is missing"));

        // A tensor of the wrong shape.
        var reshaped = original.InFileOrder.Select(t => t.Name == "head.bias" ? SafeTensor.F32("head.bias", [t.ElementCount, 1], t.Floats!) : t).ToList();
        SafeTensors.Write(file, reshaped, original.Metadata);
        Assert.That(() => Checkpoint.Load(TestDevice.Cpu, folder, useEma: false),
            Throws.TypeOf<CheckpointException>().With.Message.Contains("'head.bias' has shape"));

        // No training state: resume says so.
        WriteBack(file, bytes);
        File.Delete(Checkpoint.Locate(folder).StateFile!);
        Assert.That(() => Checkpoint.Resume(TestDevice.Cpu, folder, null, out _),
            Throws.TypeOf<CheckpointException>().With.Message.Contains("state.safetensors, which is missing"));
    }

    private static string WriteBack(string file, byte[] bytes)
    {
        File.WriteAllBytes(file, bytes);
        return file;
    }
}
