using System.CommandLine;
using System.Diagnostics;
using IlgpuDdpm.Cli.Training;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Evaluation;

namespace IlgpuDdpm.Cli.Commands;

/// <summary>
/// <c>ddpm score</c>: the Fréchet classifier distance and KID of a model's samples (or of any folder of
/// images) against the test split, on the evaluation classifier's features, with the real-vs-real floor
/// that makes the numbers readable.
/// </summary>
internal static class ScoreCommand
{
    /// <summary>Where the shipped Fashion-MNIST classifier lies next to the executable (copied there by the build).</summary>
    public static string ShippedClassifier => Path.Combine(AppContext.BaseDirectory, "models", "fashion-mnist-classifier.safetensors");

    public static Command Create(CliContext context)
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Run folder or model.safetensors to sample from (EMA weights unless --raw-weights).", HelpName = "PATH" };
        var images = new Option<string?>("--images") { Description = "Folder of PNG (or JPEG/BMP) images to score, at the data's size and channels: samples of any implementation.", HelpName = "DIR" };
        var count = new Option<int>("--n") { Description = "Number of images scored (and of training images in the floor).", DefaultValueFactory = _ => 2000 }.Range(2, 60000);
        var sampler = new Option<string>("--sampler") { Description = "With --checkpoint: ddpm (all T steps, Algorithm 2) or ddim (η = 0, --steps of them).", DefaultValueFactory = _ => "ddim" }.OneOf("ddpm", "ddim");
        var steps = new Option<int>("--steps") { Description = "Sampler steps: 0 means T for ddpm and 50 for ddim.", HelpName = "S", DefaultValueFactory = _ => 0 }.NonNegative();
        var raw = CliOptions.RawWeights();
        var data = new Option<string>("--data") { Description = "Data set whose test split is the reference (and whose training split gives the floor).", HelpName = "fashion-mnist|mnist|PATH", DefaultValueFactory = _ => "fashion-mnist" };
        var classifier = new Option<string?>("--classifier") { Description = "Classifier file (default: the shipped Fashion-MNIST classifier).", HelpName = "FILE" };
        var seed = CliOptions.Seed("Seed of the sampler's noise, the KID subsets and the floor's training subset.");
        var device = CliOptions.Device();
        var command = new Command("score",
            "Sample quality: Fréchet classifier distance (FCD) and KID of generated images against the test split, on the features of a " +
            "classifier trained by this engine, with the real-vs-real floor (N training images scored the same way).")
        {
            checkpoint, images, count, sampler, steps, raw, data, classifier, seed, device,
        };
        command.SetAction(parse =>
        {
            string? run = parse.GetValue(checkpoint), folder = parse.GetValue(images);
            if ((run is null) == (folder is null)) throw new UsageException("give exactly one of --checkpoint RUN and --images DIR");
            string classifierPath = parse.GetValue(classifier) ?? ShippedClassifier;
            if (!File.Exists(classifierPath))
                throw new CliException(parse.GetValue(classifier) is null
                    ? $"the shipped classifier {classifierPath} is missing (rebuild, or pass --classifier FILE; 'ddpm classifier train' makes one)"
                    : $"--classifier {classifierPath}: file not found");
            var config = ClassifierFile.ReadConfig(classifierPath);
            int n = parse.GetValue(count);
            ulong noiseSeed = parse.GetValue(seed);

            float[] pixels;
            string what;
            if (folder is not null)
            {
                if (!Directory.Exists(folder)) throw new CliException($"--images {folder}: folder not found");
                var bytes = ImageFolderReader.Read(folder);
                SampleQuality.CheckShape(config, bytes.Channels, bytes.Height, bytes.Width, folder);
                if (bytes.Count < n) throw new DataException($"{folder}: holds {bytes.Count} images, fewer than --n {n}");
                pixels = ImageDataset.FromBytes(bytes, folder).Data;
                what = $"{n} images from {folder}";
            }
            else
            {
                Checkpoint.ModelPath(run!);
                pixels = [];
                what = "";
            }

            using var lease = context.OpenDevice(parse.GetValue(device));
            var dev = lease.Device;
            context.Output.WriteLine($"device: {Format.Device(dev)}");
            var clock = Stopwatch.StartNew();
            if (run is not null)
            {
                using var loaded = Checkpoint.Load(dev, run, useEma: !parse.GetValue(raw));
                var cfg = loaded.Config;
                if (cfg.InChannels != config.InChannels || cfg.ImageSize != config.ImageSize)
                    throw new CheckpointException($"{run}: the model makes {cfg.InChannels}x{cfg.ImageSize}x{cfg.ImageSize} images; the classifier {classifierPath} scores {config.InChannels}x{config.ImageSize}x{config.ImageSize}");
                var options = SampleOptionsFor(parse.GetValue(sampler)!, parse.GetValue(steps), loaded.Schedule.Timesteps, n, noiseSeed);
                int total = SamplerSteps(options, loaded.Schedule.Timesteps);
                context.Output.WriteLine($"model: {cfg} at step {loaded.Step:N0} ({(loaded.UsedEma ? "EMA" : "raw")} weights)");
                context.Output.WriteLine($"sampling {n} images: {options.Sampler.ToString().ToLowerInvariant()}, {total} steps, seed {noiseSeed}");
                using var diffusion = new GaussianDiffusion(dev, loaded.Schedule);
                var result = ProgressDisplay.Run(context, "sampling", total, _ => false, display =>
                    diffusion.Sample(loaded.Model, options, (done, all) =>
                    {
                        double step = (double)done * total / Math.Max(all, 1);
                        display.Update(step, $"sampling: step {(int)step}/{total}");
                    }));
                pixels = result.Images;
                what = $"{n} samples of {run} ({options.Sampler.ToString().ToLowerInvariant()}, {total} steps)";
            }

            using var quality = new SampleQuality(dev, classifierPath, parse.GetValue(data)!);
            var score = quality.Score(pixels, n, (int)noiseSeed);
            var floor = quality.Floor(n, (int)noiseSeed);
            context.Output.WriteLine($"scored {what} against {quality.ReferenceCount:N0} test images of {quality.ReferenceSource} on {classifierPath} in {Format.Duration(clock.Elapsed)}");
            context.Output.WriteLine($"fcd {Fcd(score.Fcd)}");
            context.Output.WriteLine($"kid {Kid(score.Kid)} ± {Kid(score.KidStdDev)}");
            context.Output.WriteLine($"real-vs-real fcd {Fcd(floor.Fcd)} kid {Kid(floor.Kid)}");
            return 0;
        });
        return command;
    }

    /// <summary>FCD as printed: four decimals.</summary>
    public static string Fcd(double v) => Format.Num(v, "F4");

    /// <summary>KID as printed: six decimals (it is a small number).</summary>
    public static string Kid(double v) => Format.Num(v, "F6");

    /// <summary>The sampler options of <c>--sampler</c>/<c>--steps</c>; a usage error for a combination the sampler cannot run.</summary>
    public static SampleOptions SampleOptionsFor(string sampler, int steps, int timesteps, int count, ulong seed)
    {
        var kind = sampler == "ddpm" ? SamplerKind.Ddpm : SamplerKind.Ddim;
        if (steps > timesteps) throw new UsageException($"--steps {steps} exceeds the model's T = {timesteps}");
        if (kind == SamplerKind.Ddpm && steps != 0 && steps != timesteps)
            throw new UsageException($"--steps {steps}: the ddpm sampler runs all T = {timesteps} steps; use --sampler ddim for fewer");
        return new SampleOptions { Count = count, Sampler = kind, Steps = steps, Seed = seed };
    }

    /// <summary>Number of network evaluations of the sampler.</summary>
    public static int SamplerSteps(SampleOptions options, int timesteps) =>
        options.Steps != 0 ? options.Steps : options.Sampler == SamplerKind.Ddpm ? timesteps : Math.Min(50, timesteps);
}
