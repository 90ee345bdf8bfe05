using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Evaluation;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Cli.Commands;

/// <summary>
/// <c>ddpm classifier train|eval</c>: the small CNN whose penultimate features <c>ddpm score</c> measures
/// samples with (Fréchet classifier distance, KID), trained by this engine on a labelled data set.
/// </summary>
internal static class ClassifierCommand
{
    public static Command Create(CliContext context)
    {
        var command = new Command("classifier", "Train or test the classifier whose features 'ddpm score' uses (FCD and KID).");
        command.Subcommands.Add(Train(context));
        command.Subcommands.Add(Eval(context));
        return command;
    }

    private static Option<string> Data() => new("--data")
    {
        Description = "Labelled data set: fashion-mnist, mnist, a folder of IDX files or an IDX image file with its *-labels-idx1-ubyte[.gz] beside it.",
        HelpName = "fashion-mnist|mnist|PATH",
        Required = true,
    };

    private static Command Train(CliContext context)
    {
        var data = Data();
        var output = new Option<string>("--out") { Description = "The classifier file to write (safetensors); must not exist.", HelpName = "FILE", Required = true };
        var steps = new Option<int>("--steps") { Description = "Optimisation steps.", DefaultValueFactory = _ => new ClassifierTrainingOptions().Steps }.Positive();
        var batch = new Option<int>("--batch") { Description = "Images per step.", DefaultValueFactory = _ => new ClassifierTrainingOptions().BatchSize }.Range(1, 4096);
        var lr = new Option<double>("--lr") { Description = "Adam's peak learning rate (linear warm-up, then cosine decay to 0).", DefaultValueFactory = _ => new ClassifierTrainingOptions().LearningRate }
            .Range(0, 1, minExclusive: true);
        var warmup = new Option<int>("--warmup") { Description = "Steps of linear learning-rate warm-up.", DefaultValueFactory = _ => new ClassifierTrainingOptions().WarmupSteps }.NonNegative();
        var seed = CliOptions.Seed("Seed of the initialisation, the data order and the flips (same seed, same file).");
        var device = CliOptions.Device();
        var command = new Command("train", "Train the evaluation classifier (3×3 convs, GroupNorm, SiLU, stride-2 downsampling, global average pooling, a linear head) with softmax cross-entropy.")
        {
            data, output, steps, batch, lr, warmup, seed, device,
        };
        command.SetAction(parse =>
        {
            string outPath = parse.GetValue(output)!;
            SampleCommand.CheckWritable(outPath, "--out");
            if (File.Exists(outPath)) throw new UsageException($"--out {outPath} exists; choose another name or delete it");
            string spec = parse.GetValue(data)!;
            var train = LabelledImages.Load(spec, DatasetSplit.Train);
            var test = LabelledImages.Load(spec, DatasetSplit.Test, train.Classes);
            var options = new ClassifierTrainingOptions
            {
                Steps = parse.GetValue(steps),
                BatchSize = parse.GetValue(batch),
                LearningRate = parse.GetValue(lr),
                WarmupSteps = parse.GetValue(warmup),
                Seed = parse.GetValue(seed),
            };
            var config = ClassifierConfig.ForImages(train.Images.Channels, train.Images.Height, train.Classes);
            if (train.Images.Height != train.Images.Width)
                throw new DataException($"{train.Images.Source}: images are {train.Images.Height}x{train.Images.Width}; the classifier needs square images");

            using var lease = context.OpenDevice(parse.GetValue(device));
            var dev = lease.Device;
            using var trainer = new ClassifierTrainer(dev, config, train, options);
            context.Output.WriteLine($"device: {Format.Device(dev)}");
            context.Output.WriteLine($"data: {train.Images.Source}, {train.Count:N0} labelled images, {train.Classes} classes");
            context.Output.WriteLine($"classifier: {config}, {trainer.Model.ParameterCount:N0} parameters");
            context.Output.WriteLine($"training: {options.Steps} steps of {options.BatchSize}, Adam lr {Format.Num(options.LearningRate, "G4")} (cosine), seed {options.Seed}");
            var clock = Stopwatch.StartNew();
            double recent = 0;
            int every = Math.Max(1, Math.Min(100, options.Steps / 20));
            for (int s = 0; s < options.Steps; s++)
            {
                context.Interrupt.ThrowIfCancellationRequested();
                recent += trainer.TrainStep();
                if ((s + 1) % every == 0 || s + 1 == options.Steps)
                {
                    int n = (s + 1) % every == 0 ? every : (s + 1) % every;
                    double seconds = clock.Elapsed.TotalSeconds;
                    context.Output.WriteLine($"step {s + 1}/{options.Steps}  loss {Format.Num(recent / n, "F4")}  {Format.Num((s + 1) * (double)options.BatchSize / Math.Max(seconds, 1e-9), "F1")} images/s  {Format.Duration(clock.Elapsed)}");
                    recent = 0;
                }
            }
            double accuracy = ClassifierEvaluation.Accuracy(trainer.Model, test);
            var meta = new Dictionary<string, string>
            {
                ["data"] = Path.GetFileName(spec.TrimEnd('/')),
                ["seed"] = options.Seed.ToString(CultureInfo.InvariantCulture),
                ["steps"] = options.Steps.ToString(CultureInfo.InvariantCulture),
                ["batch"] = options.BatchSize.ToString(CultureInfo.InvariantCulture),
                ["lr"] = options.LearningRate.ToString("R", CultureInfo.InvariantCulture),
                ["warmup"] = options.WarmupSteps.ToString(CultureInfo.InvariantCulture),
                ["test_accuracy"] = accuracy.ToString("F4", CultureInfo.InvariantCulture),
            };
            ClassifierFile.Save(outPath, trainer.Model, meta);
            context.Output.WriteLine($"trained in {Format.Duration(clock.Elapsed)}");
            context.Output.WriteLine($"accuracy {Format.Num(accuracy, "F4")}");
            context.Output.WriteLine($"wrote {outPath}");
            return 0;
        });
        return command;
    }

    private static Command Eval(CliContext context)
    {
        var data = Data();
        var file = new Option<string>("--classifier") { Description = "The classifier file (safetensors) written by 'ddpm classifier train'.", HelpName = "FILE", Required = true };
        var device = CliOptions.Device();
        var command = new Command("eval", "Print the classifier's accuracy on the test split.") { file, data, device };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(file)!;
            var config = ClassifierFile.ReadConfig(path);
            var test = LabelledImages.Load(parse.GetValue(data)!, DatasetSplit.Test, config.Classes);
            var images = test.Images;
            if (images.Channels != config.InChannels || images.Height != config.ImageSize || images.Width != config.ImageSize)
                throw new DataException($"{images.Source}: images are {images.Channels}x{images.Height}x{images.Width}; the classifier {path} expects {config.InChannels}x{config.ImageSize}x{config.ImageSize}");
            using var lease = context.OpenDevice(parse.GetValue(device));
            using var classifier = ClassifierFile.Load(lease.Device, path);
            double accuracy = ClassifierEvaluation.Accuracy(classifier, test);
            context.Output.WriteLine($"data: {images.Source}, {test.Count:N0} test images");
            context.Output.WriteLine($"accuracy {Format.Num(accuracy, "F4")}");
            return 0;
        });
        return command;
    }
}
