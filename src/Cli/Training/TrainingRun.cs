using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Evaluation;
using IlgpuDdpm.Diffusion.Distributed;
using IlgpuDdpm.Diffusion.Images;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;
using IlgpuDdpm.Cli.Commands;

namespace IlgpuDdpm.Cli.Training;

/// <summary>
/// One invocation of <c>ddpm train</c>: opens the device, loads the data, builds (or resumes) the
/// trainer, and runs the loop — progress, metrics.jsonl, sample grids, checkpoints, loss.png, Ctrl-C.
/// </summary>
internal sealed class TrainingRun
{
    /// <summary>Seed of the noise behind every sample grid of a run, so grids at different steps are comparable.</summary>
    public const ulong PreviewSeed = 0x5A3D1E5EEDUL;

    private readonly CliContext context;
    private readonly RunConfig config;
    private readonly string folder;
    private readonly string? deviceChoice;
    private readonly bool resuming;
    private TextWriter output;
    private string runId = "";
    // The data-parallel ranks (docs/distributed.md); a plain run is SingleProcess. Only rank 0 touches the folder.
    private ICommunicator ranks = SingleProcess.Instance;

    public TrainingRun(CliContext context, RunConfig config, string folder, string? deviceChoice, bool resuming)
    {
        this.context = context;
        this.config = config;
        this.folder = folder;
        this.deviceChoice = deviceChoice;
        this.resuming = resuming;
        output = context.Output;
    }

    private string LossPlotPath => Path.Combine(folder, "loss.png");
    private string SamplesFolder => Path.Combine(folder, "samples");

    public int Run()
    {
        ranks = Launcher.Open();
        if (ranks.Size == 1 && ranks is SingleProcess) return RunRoot();
        if (config.Batch % ranks.Size != 0)
        {
            // Every rank finds this before any collective call: each one stops with the same line, no abort needed.
            ranks.Dispose();
            throw new UsageException($"--batch {config.Batch} cannot be split over {ranks.Size} ranks; choose a multiple of {ranks.Size} (--batch is the global batch)");
        }
        try
        {
            if (!ranks.IsRoot)
            {
                output = TextWriter.Null; // rank 0 alone prints progress and writes the run folder
                return RunLocked();
            }
            return RunRoot();
        }
        catch (Exception e) when (ranks.Size > 1)
        {
            // The other ranks wait in a collective for this one: end the whole job (Open MPI's MPI_Abort).
            context.Error.WriteLine($"ddpm: rank {ranks.Rank} of {ranks.Size}: {Program.OneLine(e.Message)}; stopping every rank");
            context.Error.Flush();
            ranks.Abort(e is UsageException ? Program.UsageExitCode : Program.FailureExitCode);
            throw;
        }
        finally
        {
            ranks.Dispose();
        }
    }

    private int RunRoot()
    {
        // One writer per run folder: everything below runs under the folder's lock (RunLock).
        bool created = !Directory.Exists(folder);
        var runLock = RunLock.Acquire(folder);
        try
        {
            return RunLocked();
        }
        catch when (created && !File.Exists(Path.Combine(folder, "config.json")))
        {
            // Refused before anything was written: leave no empty run folder behind.
            runLock.Dispose();
            try { Directory.Delete(folder, recursive: true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            throw;
        }
        finally
        {
            runLock.Dispose();
        }
    }

    private int RunLocked()
    {
        // The folder is rank 0's: the other ranks get its state by broadcast.
        if (ranks.IsRoot && resuming && !Checkpoint.Exists(folder))
            throw new CliException($"{folder}: holds no checkpoint ({Checkpoint.ManifestFile} or {Checkpoint.ModelFile}) to resume from");
        if (ranks.IsRoot && !resuming && Checkpoint.Exists(folder))
            throw new UsageException($"--out {folder} already holds a checkpoint; pass --resume to continue that run, or choose another folder");

        // Data first: a missing data set is reported before any device work.
        var (data, modelConfig) = config.LoadTrainingData();
        string? classifierPath = Scoring ? CheckClassifier(data) : null;
        var schedule = config.BuildSchedule();

        if (ranks.Size > 1) DistributedCheck.SameRun(ranks, config, data);

        // Several ranks on one machine: the GPU of the node-local rank, or an equal share of the CPU cores.
        using var lease = ranks is SingleProcess ? context.OpenDevice(deviceChoice)
            : new CliContext.DeviceLease(ComputeDevice.Open(deviceChoice, ranks.LocalRank, Math.Max(1, Environment.ProcessorCount / ranks.LocalSize)), d => d.Dispose());
        var device = lease.Device;
        if (ranks.Size > 1)
            output.WriteLine($"distributed: {ranks.Description}; global batch {config.Batch} = {ranks.Size} x {config.Batch / ranks.Size}");
        output.WriteLine($"device: {Format.Device(device)}");
        output.WriteLine($"data: {data.Source}, {data.Count:N0} images of {data.Channels}x{data.Height}x{data.Width}");
        var summary = ModelSummary.For(modelConfig);
        output.WriteLine($"model: {config.Preset} ({modelConfig}), {Format.Count(summary.TotalParameters)} parameters; " +
                         $"schedule: {config.Schedule}, T = {config.Timesteps}; batch {config.Batch}");
        if (device.IsCpu && config.Preset != "tiny") WarnCpu(summary, modelConfig);

        if (ranks.IsRoot)
        {
            Directory.CreateDirectory(folder);
            Directory.CreateDirectory(SamplesFolder);
        }

        var options = config.TrainingOptions();

        // The trainer's model and diffusion are ours to dispose (Trainer.Dispose frees only its own buffers).
        Trainer trainer;
        SamplerState position = default;
        if (resuming && ranks.IsRoot)
        {
            trainer = Checkpoint.Resume(device, folder, null, out position, out string? savedRunId);
            if (savedRunId is not null && config.RunId is not null && savedRunId != config.RunId)
            {
                DisposeAll(trainer);
                throw new CliException($"{Checkpoint.ModelPath(folder)}: belongs to run {savedRunId}, but {Path.Combine(folder, "config.json")} to run {config.RunId}; the folder mixes two runs");
            }
            runId = savedRunId ?? config.RunId ?? Checkpoint.NewRunId(); // a pair saved before run ids gets one now
            if (!trainer.Model.Config.Equals(modelConfig))
            {
                string found = trainer.Model.Config.ToString();
                DisposeAll(trainer);
                throw new CliException($"{Checkpoint.ModelPath(folder)}: its model ({found}) is not the one config.json describes ({modelConfig})");
            }
            if (trainer.Diffusion.Schedule.Spec != schedule.Spec)
            {
                string found = trainer.Diffusion.Schedule.Spec.ToString();
                DisposeAll(trainer);
                throw new CliException($"{Checkpoint.ModelPath(folder)}: its schedule ({found}) is not the one config.json describes ({schedule.Spec})");
            }
            output.WriteLine($"resuming {folder} at step {trainer.Step:N0} (data epoch {position.Epoch}, image {position.Index})");
        }
        else
        {
            runId = Checkpoint.NewRunId();
            var model = new UNet(device, modelConfig, config.Seed);
            var diffusion = new GaussianDiffusion(device, schedule);
            try
            {
                trainer = new Trainer(model, diffusion, options);
            }
            catch
            {
                diffusion.Dispose();
                model.Dispose();
                throw;
            }
        }

        try
        {
            if (ranks.Size > 1)
            {
                // Rank 0's weights, optimizer state, step and data position (its checkpoint's, on --resume) for every rank.
                trainer.Distribute(ranks);
                output.WriteLine(TransferPaths.Describe(trainer.TransferPath!.Value, device.Kind, ranks.CudaAware));
                if (Launcher.InterruptNote() is { } note) output.WriteLine(note);
                Span<double> where = [position.Epoch, position.Index];
                ranks.Broadcast(where);
                position = new SamplerState((long)where[0], (int)where[1]);
            }
            using var previewDiffusion = new GaussianDiffusion(device, schedule);
            using var previewModel = new UNet(device, modelConfig, config.Seed);
            var sampler = new BatchSampler(data, config.Batch, config.Seed, config.Flip, position);

            if (ranks.IsRoot) WriteConfig(device, data, modelConfig, summary);
            using var metrics = !ranks.IsRoot ? null
                : resuming ? MetricsLog.Resume(Path.Combine(folder, "metrics.jsonl"), trainer.Step)
                : MetricsLog.Create(Path.Combine(folder, "metrics.jsonl"));

            // Rank 0 alone scores (it alone writes metrics.jsonl); the other ranks wait for it at the next step.
            using var quality = classifierPath is null || !ranks.IsRoot ? null : new SampleQuality(device, classifierPath, config.Data);
            return Loop(device, trainer, sampler, metrics, previewDiffusion, previewModel, quality);
        }
        finally
        {
            DisposeAll(trainer);
        }
    }

    private static void DisposeAll(Trainer trainer)
    {
        trainer.Dispose();
        trainer.Diffusion.Dispose();
        trainer.Model.Dispose();
    }

    private int Loop(ComputeDevice device, Trainer trainer, BatchSampler sampler, MetricsLog? metrics,
                     GaussianDiffusion previewDiffusion, UNet previewModel, SampleQuality? quality)
    {
        long startStep = trainer.Step;
        long? target = config.Steps;
        double? seconds = config.Minutes * 60;
        if (target is { } t0 && startStep >= t0)
        {
            output.WriteLine($"the run is already at step {startStep:N0} of {t0:N0}; pass a larger --steps to train further");
            return 0;
        }

        var batch = new float[sampler.BatchLength];
        var clock = Stopwatch.StartNew();
        long lastSaved = resuming ? startStep : -1, lastSampled = -1;
        double intervalLoss = 0;
        int intervalSteps = 0;
        double intervalStart = 0;
        double firstStepEnd = 0;
        bool cpuNoted = false;
        float lastLoss = float.NaN;
        double smoothedLoss = double.NaN;

        StepResult last = default;
        long lastScored = -1;

        // One metrics.jsonl line for the steps since the previous one (also for a partial interval at the end),
        // carrying the FCD and KID of a scored step.
        // The losses (and the latest gradient norm) of the steps since the last read-back: one wait for the device,
        // only on the steps that log, print, score, sample or save (issue 9: a step that logs nothing never waits).
        // Each loss is taken in step order, so the metrics are those of reading every step.
        void Drain()
        {
            var (losses, norm) = trainer.ReadBack();
            long first = trainer.Step - losses.Count + 1;
            for (int k = 0; k < losses.Count; k++)
            {
                float loss = losses[k];
                if (!float.IsFinite(loss))
                    throw new CliException($"the loss is {loss} at step {first + k}: training diverged (try a lower --lr or a longer --warmup); the last checkpoint in {folder} is kept");
                lastLoss = loss;
                smoothedLoss = double.IsNaN(smoothedLoss) ? loss : 0.95 * smoothedLoss + 0.05 * loss;
                intervalLoss += loss;
                intervalSteps++;
            }
            if (losses.Count > 0) last = last with { Loss = losses[^1], GradNorm = norm };
        }

        void FlushMetrics(QualityScore? score = null)
        {
            if (trainer.Step > startStep) Drain();
            if (intervalSteps == 0 && score is null) return;
            double now = clock.Elapsed.TotalSeconds, span = now - intervalStart;
            double loss = intervalSteps > 0 ? intervalLoss / intervalSteps : metrics is { Lines.Count: > 0 } ? metrics.Lines[^1].Loss : lastLoss;
            metrics?.Append(new MetricsLine(last.Step, loss, last.GradNorm, last.LearningRate,
                span > 0 ? intervalSteps * config.Batch / span : 0, Math.Round(now, 3))
            {
                Fcd = score?.Fcd,
                Kid = score?.Kid,
                KidStdDev = score?.KidStdDev,
            });
            intervalLoss = 0; intervalSteps = 0; intervalStart = now;
        }

        QualityScore ScoreNow(long step)
        {
            var score = Score(trainer, previewDiffusion, previewModel, quality!);
            lastScored = step;
            return score;
        }

        double Progress(long step) => target is { } t ? step : clock.Elapsed.TotalSeconds;
        double maxValue = target is { } tt ? tt : seconds!.Value;
        string title = target is { } t1 ? $"step {startStep}/{t1}" : $"step {startStep}";

        int Body(IProgressDisplay display)
        {
            if (target is { } tv) display.Update(startStep, title);
            while (true)
            {
                bool timeUp = seconds is { } s && clock.Elapsed.TotalSeconds >= s;
                bool interrupted = context.Interrupt.IsCancellationRequested;
                if (ranks.Size > 1)
                {
                    // The ranks stop together: on rank 0's clock, or when any rank was interrupted.
                    Span<double> votes = [timeUp && ranks.IsRoot ? 1 : 0, interrupted ? 1 : 0];
                    ranks.AllReduceMax(votes);
                    timeUp = votes[0] > 0;
                    interrupted = votes[1] > 0;
                }
                if (interrupted && trainer.Step > startStep)
                {
                    FlushMetrics();
                    if (lastSaved != trainer.Step) Save(trainer, sampler, metrics);
                    display.Note($"interrupted at step {trainer.Step:N0}: checkpoint saved in {folder}; continue with: ddpm train --resume {folder}");
                    return Program.InterruptedExitCode;
                }
                if (target is { } limit && trainer.Step >= limit) break;
                if (timeUp) break;

                sampler.Next(batch);
                var result = trainer.TrainStep(batch, readBack: false);
                long step = result.Step;
                double now = clock.Elapsed.TotalSeconds;
                last = result;
                bool checkpointDue = config.CheckpointEvery > 0 && step % config.CheckpointEvery == 0;
                bool sampleDue = ranks.IsRoot && config.SampleEvery > 0 && step % config.SampleEvery == 0;
                bool scoreDue = quality is not null && config.ScoreEvery > 0 && step % config.ScoreEvery == 0;
                bool lastStep = target is { } end ? step >= end : now >= seconds!.Value;
                // Read the losses back before anything is logged, printed or saved (a diverged run must not overwrite
                // its last good checkpoint); the other steps leave them on the device.
                if (step == startStep + 1 || step % config.LogEvery == 0 || step % config.PrintEvery == 0 || checkpointDue || sampleDue || scoreDue || lastStep)
                    Drain();
                long done = step - startStep;
                if (done == 1) firstStepEnd = now; // the first step also compiles every kernel

                // Throughput and time left, from the steps after the first.
                double rate = done > 1 && now > firstStepEnd ? (done - 1) / (now - firstStepEnd) : done / Math.Max(now, 1e-9);
                double imagesPerSecond = rate * config.Batch;
                TimeSpan? eta = target is { } tgt
                    ? TimeSpan.FromSeconds((tgt - step) / Math.Max(rate, 1e-9))
                    : TimeSpan.FromSeconds(Math.Max(0, seconds!.Value - now));

                if (scoreDue)
                {
                    var score = ScoreNow(step);
                    FlushMetrics(score);
                    display.Note(ScoreLine(step, score));
                }
                else if (step % config.LogEvery == 0) FlushMetrics();

                // The first step also compiles every kernel: no time estimate from it alone.
                string etaText = done == 1 && target is not null ? "after step 2" : Format.Duration(eta!.Value);
                string status = target is { } tg
                    ? $"step {step}/{tg}  loss {smoothedLoss:F4}  {imagesPerSecond:F1} img/s  ETA {etaText}"
                    : $"step {step}  loss {smoothedLoss:F4}  {imagesPerSecond:F1} img/s  {Format.Duration(eta!.Value)} left";
                display.Update(Progress(step), status.ToString(CultureInfo.InvariantCulture));

                if (device.IsCpu && !cpuNoted && done == 2 && config.Preset != "tiny")
                {
                    cpuNoted = true;
                    double perStep = now - firstStepEnd;
                    display.Note(target is { } tcpu
                        ? $"note: {perStep:F1} s per step on the CPU accelerator: the remaining {tcpu - step:N0} steps take about {Format.Duration(eta!.Value)}"
                        : $"note: {perStep:F1} s per step on the CPU accelerator: about {3600 / perStep:F0} steps per hour");
                }

                if (checkpointDue)
                {
                    Save(trainer, sampler, metrics);
                    lastSaved = step;
                }
                if (sampleDue)
                {
                    Preview(trainer, previewDiffusion, previewModel, step);
                    lastSampled = step;
                }

            }
            return 0;
        }

        // A plain line at the first step, every --print-every steps, and at the last.
        bool PrintLine(double value)
        {
            long step = trainer.Step;
            if (step == startStep) return false;
            bool last = target is { } t ? step >= t : seconds is { } s && clock.Elapsed.TotalSeconds >= s;
            return step == startStep + 1 || step % config.PrintEvery == 0 || last;
        }

        context.StopsCleanlyOnInterrupt = true;
        int code;
        try
        {
            // Rank 0 alone shows progress, as plain lines under a launcher (mpirun hands the ranks a pseudo-terminal,
            // and a live bar in its forwarded output is noise).
            var shown = ranks is SingleProcess ? context
                : new CliContext(ranks.IsRoot ? context.Output : TextWriter.Null, context.Error, interactive: false, context.Interrupt);
            code = ProgressDisplay.Run(shown, title, maxValue, PrintLine, Body);
        }
        finally
        {
            context.StopsCleanlyOnInterrupt = false;
        }
        if (code != 0) return code;

        long final = trainer.Step;
        QualityScore? finalScore = quality is not null && lastScored != final ? ScoreNow(final) : null;
        FlushMetrics(finalScore);
        if (finalScore is { } fs) output.WriteLine(ScoreLine(final, fs));
        if (lastSaved != final) Save(trainer, sampler, metrics);
        else if (metrics is { Lines.Count: > 0 }) LossPlot.SavePng(LossPlotPath, metrics.LossPoints(), metrics.ScorePoints());
        if (ranks.IsRoot && config.SampleEvery > 0 && lastSampled != final) Preview(trainer, previewDiffusion, previewModel, final);
        double elapsed = clock.Elapsed.TotalSeconds;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"done: step {final:N0} ({final - startStep:N0} steps in {Format.Duration(TimeSpan.FromSeconds(elapsed))}, " +
            $"{(final - startStep) * config.Batch / Math.Max(elapsed, 1e-9):F1} img/s), last loss {lastLoss:F4}; run folder {folder}"));
        if (ranks.Size > 1 && final > startStep)
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"all-reduce: {trainer.AllReduceTime.TotalMilliseconds / (final - startStep):F2} ms per step on rank 0 ({(trainer.TransferPath == TransferPath.Direct ? "direct" : "staged through host memory")}, {ranks.Size} ranks)"));
        return 0;
    }

    /// <summary>The checkpoint pair (both files, then the manifest renamed: docs/checkpoint-format.md) and loss.png.</summary>
    private void Save(Trainer trainer, BatchSampler sampler, MetricsLog? metrics)
    {
        if (metrics is null) return; // not rank 0: rank 0 alone writes the run folder
        Checkpoint.Save(folder, trainer, sampler.State, runId, new Dictionary<string, string>
        {
            ["preset"] = config.Preset,
            ["data"] = config.Data,
        });
        var points = metrics.LossPoints();
        if (points.Count > 0) LossPlot.SavePng(LossPlotPath, points, metrics.ScorePoints());
    }

    /// <summary>samples/step-NNNNNN.png: the EMA weights, DDIM, a fixed noise seed.</summary>
    private void Preview(Trainer trainer, GaussianDiffusion diffusion, UNet model, long step)
    {
        var result = SampleEma(trainer, diffusion, model, config.SampleCount);
        ImageGrid.SavePng(Path.Combine(SamplesFolder, $"step-{step:D6}.png"), result.Images, result.Count, result.Channels, result.Height, result.Width);
    }

    /// <summary>Whether this run scores its samples (<c>--score-every</c>, or the newcomer's run at its end).</summary>
    private bool Scoring => config.ScoreEvery > 0 || config.ScoreAtEnd;

    /// <summary>The classifier file scoring uses, checked to exist and to fit the data's images (before any device work).</summary>
    private string CheckClassifier(ImageDataset data)
    {
        string path = config.Classifier ?? ScoreCommand.ShippedClassifier;
        if (!File.Exists(path))
            throw new CliException(config.Classifier is null
                ? $"scoring needs the shipped classifier {path}, which is missing (rebuild, or pass --classifier FILE)"
                : $"--classifier {path}: file not found");
        var classifier = ClassifierFile.ReadConfig(path);
        if (classifier.InChannels != data.Channels || classifier.ImageSize != data.Height)
            throw new CliException($"{path}: the classifier scores {classifier.InChannels}x{classifier.ImageSize}x{classifier.ImageSize} images, the run makes {data.Channels}x{data.Height}x{data.Width}; pass --classifier FILE for this data");
        return path;
    }

    /// <summary>FCD and KID of <c>--score-n</c> samples of the EMA weights (DDIM, <c>--sample-steps</c> steps, the preview seed).</summary>
    private QualityScore Score(Trainer trainer, GaussianDiffusion diffusion, UNet model, SampleQuality quality)
    {
        var result = SampleEma(trainer, diffusion, model, config.ScoreN);
        return quality.Score(result.Images, result.Count);
    }

    /// <summary><paramref name="count"/> images of the EMA weights: DDIM in --sample-steps steps, the preview seed.</summary>
    private SampleResult SampleEma(Trainer trainer, GaussianDiffusion diffusion, UNet model, int count)
    {
        trainer.CopyEmaInto(model);
        return diffusion.Sample(model, new SampleOptions
        {
            Count = count,
            Sampler = SamplerKind.Ddim,
            Steps = Math.Min(config.SampleSteps, config.Timesteps),
            Seed = PreviewSeed,
        });
    }

    private string ScoreLine(long step, QualityScore score) =>
        $"step {step}: fcd {ScoreCommand.Fcd(score.Fcd)}  kid {ScoreCommand.Kid(score.Kid)} ± {ScoreCommand.Kid(score.KidStdDev)}  ({score.Count} DDIM samples of the EMA weights)";

    private void WarnCpu(ModelSummary summary, UNetConfig modelConfig)
    {
        var tiny = ModelSummary.For(UNetConfig.FromPreset("tiny", modelConfig.ImageSize, modelConfig.InChannels));
        double gflopPerStep = summary.TrainingGFlopPerImage * config.Batch;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"note: no GPU in use: the CPU accelerator runs every kernel as .NET threads ({Environment.ProcessorCount} cores), " +
            $"typically a few GFLOP/s. The {config.Preset} preset needs {gflopPerStep:F0} GFLOP per step at batch {config.Batch}, " +
            $"so expect tens of seconds per step (measured after step 2) and days for thousands of steps. For a quick run use " +
            $"--preset tiny ({summary.TotalGFlop / tiny.TotalGFlop:F0}x cheaper per image) with a smaller --batch, or a GPU (--device cuda)."));
    }

    private void WriteConfig(ComputeDevice device, ImageDataset data, UNetConfig modelConfig, ModelSummary summary)
    {
        string now = DateTime.Now.ToString("yyyy-MM-ddTHH:mm:ssK", CultureInfo.InvariantCulture);
        string path = Path.Combine(folder, "config.json");
        var resumed = config.Resumed ?? [];
        if (resuming) resumed = [.. resumed, now];
        var written = config with
        {
            RunId = runId,
            DeviceChoice = deviceChoice ?? Environment.GetEnvironmentVariable(ComputeDevice.EnvironmentVariable) ?? "auto",
            Device = Format.Device(device),
            DataSource = data.Source,
            Images = data.Count,
            ImageShape = [data.Channels, data.Height, data.Width],
            Parameters = summary.TotalParameters,
            Model = JsonNode.Parse(modelConfig.ToJson()),
            Created = config.Created ?? now,
            Resumed = resuming ? resumed : null,
        };
        written.Save(path);
    }
}
