using System.CommandLine;
using System.Globalization;
using IlgpuDdpm.Cli.Training;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Cli.Commands;

/// <summary>
/// <c>ddpm train</c>: parses the options into a <see cref="RunConfig"/> (or reads the run's config.json
/// when resuming) and hands it to <see cref="TrainingRun"/>.
/// </summary>
internal static class TrainCommand
{
    /// <summary>Training length when neither --steps nor --minutes is given.</summary>
    public const long DefaultSteps = 10_000;

    /// <summary>The newcomer's run on a CPU-only machine (no --preset, --steps or --minutes): this preset ...</summary>
    public const string CpuDefaultPreset = "tiny";

    /// <summary>... for this many minutes, then a sample grid and its FCD/KID ...</summary>
    public const double CpuDefaultMinutes = 30;

    /// <summary>... on this many samples (fewer than --score-n's default: sampling is slow on the CPU).</summary>
    public const int CpuDefaultScoreN = 500;

    public static Command Create(CliContext context)
    {
        var defaults = new RunConfig();
        var run = new RunOptions();
        var data = run.Kept(new Option<string>("--data")
        {
            Description = "Training images: fashion-mnist, mnist (IDX files under /usr/share/datasets), a folder of IDX files, one IDX file, or a folder of PNG/JPEG/BMP images.",
            HelpName = "fashion-mnist|mnist|PATH",
            DefaultValueFactory = _ => defaults.Data,
        }, (c, v) => c with { Data = v }, c => c.Data);
        var size = run.Kept(new Option<int?>("--size") { Description = "Centre-crop and resize the images to SxS (default: the data's own size).", HelpName = "S" }.Positive(), (c, v) => c with { Size = v }, c => c.Size);
        var channels = run.Kept(new Option<int?>("--channels") { Description = "Convert the images to 1 (grey) or 3 (RGB) channels (default: the data's own).", HelpName = "C" }.Positive(), (c, v) => c with { Channels = v }, c => c.Channels);
        var preset = run.Kept(new Option<string>("--preset")
        {
            Description = $"Model preset: {string.Join(", ", UNetConfig.PresetNames)} (see 'ddpm summary').",
            DefaultValueFactory = _ => defaults.Preset,
        }.OneOf([.. UNetConfig.PresetNames]), (c, v) => c with { Preset = v.Trim().ToLowerInvariant() }, c => c.Preset);
        var steps = new Option<int?>("--steps") { Description = $"Train until this many optimizer steps are done (default {DefaultSteps:N0} when --minutes is not given).", HelpName = "N" }.Positive();
        var minutes = new Option<double?>("--minutes") { Description = "Train for this many minutes of wall time instead of a step count.", HelpName = "M" }
            .Range(0, double.PositiveInfinity, minExclusive: true);
        var batch = run.Kept(new Option<int>("--batch") { Description = "Images per step.", HelpName = "B", DefaultValueFactory = _ => defaults.Batch }.Positive(), (c, v) => c with { Batch = v }, c => c.Batch);
        var lr = run.Kept(new Option<double>("--lr") { Description = "Adam learning rate after warm-up.", DefaultValueFactory = _ => defaults.LearningRate }
            .Range(0, double.PositiveInfinity, minExclusive: true), (c, v) => c with { LearningRate = v }, c => c.LearningRate);
        var warmup = run.Kept(new Option<int>("--warmup") { Description = "Steps of linear learning-rate warm-up.", DefaultValueFactory = _ => defaults.Warmup }.NonNegative(), (c, v) => c with { Warmup = v }, c => c.Warmup);
        var ema = run.Kept(new Option<double>("--ema") { Description = "Decay of the exponential moving average of the weights that sampling uses, warmed up as min(decay, (1 + step)/(10 + step)); 0: no averaging.", DefaultValueFactory = _ => defaults.Ema }
            .Range(0, 1, maxExclusive: true), (c, v) => c with { Ema = v }, c => c.Ema);
        var gradClip = run.Kept(new Option<double>("--grad-clip") { Description = "Clip the global gradient norm to this value.", DefaultValueFactory = _ => defaults.GradClip }
            .Range(0, double.PositiveInfinity, minExclusive: true), (c, v) => c with { GradClip = v }, c => c.GradClip);
        var flip = run.Kept(new Option<bool>("--flip") { Description = "Mirror training images left-right at random (the DDPM paper does for CIFAR-10)." }, (c, v) => c with { Flip = v }, c => c.Flip);
        var schedule = run.Kept(new Option<string>("--schedule") { Description = "β schedule: linear (1e-4 to 0.02, the DDPM paper) or cosine (Nichol & Dhariwal 2021).", DefaultValueFactory = _ => defaults.Schedule }
            .OneOf("linear", "cosine"), (c, v) => c with { Schedule = v.Trim().ToLowerInvariant() }, c => c.Schedule);
        var timesteps = run.Kept(new Option<int>("--timesteps") { Description = "Diffusion steps T.", HelpName = "T", DefaultValueFactory = _ => defaults.Timesteps }.Range(2, 100_000), (c, v) => c with { Timesteps = v }, c => c.Timesteps);
        var device = CliOptions.Device();
        var profile = new Option<int?>("--profile")
        {
            Description = "Instead of a run: time N train steps (after one warm-up step) kernel by kernel and print where the time goes per kernel family (launches, total ms, mean µs, % of the step) and the host's share. Writes no run folder.",
            HelpName = "N",
        }.Positive();
        var seed = run.Kept(CliOptions.Seed("Seed of the weight initialisation, the data order and every noise draw of training."), (c, v) => c with { Seed = v }, c => c.Seed);
        var output = new Option<string?>("--out") { Description = "Run folder (default: runs/<yyyyMMdd-HHmmss>). With --resume and no DIR: the run to continue.", HelpName = "DIR" };
        var resume = new Option<string?>("--resume")
        {
            Description = "Continue the run in DIR (or in --out) exactly where its last checkpoint stopped: same data order, optimizer state and noise. --steps is the new total.",
            HelpName = "DIR",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var sampleEvery = run.Changeable(new Option<int>("--sample-every")
        {
            Description = "Write samples/step-NNNNNN.png every N steps (and at the end): a grid from the EMA weights with a fixed noise seed, drawn with DDIM in 50 steps (or --sample-steps) for speed. 0: never.",
            HelpName = "N",
            DefaultValueFactory = _ => defaults.SampleEvery,
        }.NonNegative(), (c, v) => c with { SampleEvery = v });
        var sampleCount = run.Changeable(new Option<int>("--sample-count") { Description = "Images in each sample grid.", HelpName = "N", DefaultValueFactory = _ => defaults.SampleCount }.Range(1, 1024), (c, v) => c with { SampleCount = v });
        var sampleSteps = run.Changeable(new Option<int>("--sample-steps") { Description = "DDIM steps of the sample grids (capped at T).", HelpName = "S", DefaultValueFactory = _ => defaults.SampleSteps }.Positive(), (c, v) => c with { SampleSteps = v });
        var checkpointEvery = run.Changeable(new Option<int>("--checkpoint-every")
        {
            Description = "Save the checkpoint (model.safetensors + state.safetensors under checkpoints/, named by checkpoint.json) and loss.png every N steps; always at the end and on Ctrl-C or SIGTERM. 0: only then.",
            HelpName = "N",
            DefaultValueFactory = _ => defaults.CheckpointEvery,
        }.NonNegative(), (c, v) => c with { CheckpointEvery = v });
        var logEvery = run.Changeable(new Option<int>("--log-every") { Description = "Append a line to metrics.jsonl every N steps (its loss is the mean over those N steps).", HelpName = "N", DefaultValueFactory = _ => defaults.LogEvery }.Positive(), (c, v) => c with { LogEvery = v });
        var printEvery = run.Changeable(new Option<int>("--print-every") { Description = "When the output is not a terminal: print a progress line every N steps.", HelpName = "N", DefaultValueFactory = _ => defaults.PrintEvery }.Positive(), (c, v) => c with { PrintEvery = v });
        var scoreEvery = run.Changeable(new Option<int>("--score-every")
        {
            Description = "Every N steps (and at the end): FCD and KID of --score-n DDIM samples of the EMA weights against the test split, on the classifier's features, appended to metrics.jsonl and drawn in loss.png. 0: never.",
            HelpName = "N",
            DefaultValueFactory = _ => defaults.ScoreEvery,
        }.NonNegative(), (c, v) => c with { ScoreEvery = v });
        var scoreN = run.Changeable(new Option<int>("--score-n") { Description = "Samples per score.", HelpName = "M", DefaultValueFactory = _ => defaults.ScoreN }.Range(2, 60000), (c, v) => c with { ScoreN = v });
        var classifier = run.Changeable(new Option<string?>("--classifier") { Description = "Classifier file for the scores (default: the shipped Fashion-MNIST classifier).", HelpName = "FILE" }, (c, v) => c with { Classifier = v });

        var command = new Command("train",
            "Train a U-Net to predict the noise (L_simple, Algorithm 1 of the DDPM paper). Without options: the small preset on Fashion-MNIST " +
            $"on the best device; on a machine with only the CPU, the {CpuDefaultPreset} preset for {CpuDefaultMinutes:F0} minutes, ending with a sample grid and its FCD/KID. The run folder gets config.json, metrics.jsonl, samples/step-NNNNNN.png, loss.png and the checkpoint " +
            "(model.safetensors + state.safetensors, named by checkpoint.json). One process at a time writes a run folder (it holds <DIR>/.lock). " +
            "Ctrl-C or SIGTERM saves a checkpoint and stops (exit code 130); --resume continues.")
        {
            data, size, channels, preset, steps, minutes, batch, lr, warmup, ema, gradClip, flip, schedule, timesteps, device, seed,
            output, resume, sampleEvery, sampleCount, sampleSteps, checkpointEvery, logEvery, printEvery, scoreEvery, scoreN, classifier, profile,
        };

        command.SetAction(parse =>
        {
            if (parse.GetValue(steps) is not null && parse.GetValue(minutes) is not null)
                throw new UsageException("--steps and --minutes both given; choose one (train for N steps or for M minutes)");

            var typed = run.Apply(parse, new RunConfig { Steps = parse.GetValue(steps), Minutes = parse.GetValue(minutes) });
            string? outDir = parse.GetValue(output);
            string? deviceChoice = parse.GetValue(device);
            if (parse.GetValue(profile) is { } profileSteps)
            {
                if (parse.GetResult(resume) is not null) throw new UsageException("--profile times fresh steps of the model the options describe; it cannot be combined with --resume");
                return TrainingProfile.Run(context, typed, deviceChoice, profileSteps);
            }

            if (parse.GetResult(resume) is null)
            {
                // The newcomer's run (issue 7, item 5): nothing says how long or how big, and only the CPU computes.
                if (!parse.WasGiven(preset) && typed.Steps is null && typed.Minutes is null && OnlyCpu(deviceChoice))
                {
                    // The README's measured CPU settings for tiny, each unless given: the small preset's (batch 64,
                    // lr 2e-4, 1000 warm-up steps) would leave 30 CPU minutes inside the warm-up.
                    typed = typed with
                    {
                        Preset = CpuDefaultPreset,
                        Minutes = CpuDefaultMinutes,
                        ScoreAtEnd = true,
                        ScoreN = parse.WasGiven(scoreN) ? typed.ScoreN : CpuDefaultScoreN,
                        Batch = parse.WasGiven(batch) ? typed.Batch : 32,
                        LearningRate = parse.WasGiven(lr) ? typed.LearningRate : 1e-3,
                        Warmup = parse.WasGiven(warmup) ? typed.Warmup : 200,
                        Ema = parse.WasGiven(ema) ? typed.Ema : 0.999,
                    };
                    context.Output.WriteLine($"no GPU: training the {CpuDefaultPreset} preset for {CpuDefaultMinutes:F0} minutes on the CPU (batch {typed.Batch}, lr {typed.LearningRate:G3}), then a sample grid and its FCD/KID on {typed.ScoreN} samples (--preset, --steps or --minutes choose otherwise)");
                }
                if (typed.Steps is null && typed.Minutes is null) typed = typed with { Steps = DefaultSteps };
                outDir ??= Path.Combine("runs", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
                if (File.Exists(outDir))
                    throw new UsageException($"--out {outDir} is a file; expected a folder for the run");
                // An existing checkpoint in --out is refused by TrainingRun, under the folder's lock.
                return new TrainingRun(context, typed, outDir, deviceChoice, resuming: false).Run();
            }

            // Resuming: the run's own config decides data, model and optimizer; the command line may only
            // change how long to train, where to run and how often to write.
            string? resumeDir = parse.GetValue(resume);
            if (resumeDir is not null && outDir is not null && Path.GetFullPath(resumeDir) != Path.GetFullPath(outDir))
                throw new UsageException($"--resume {resumeDir} and --out {outDir} name different folders; give the run folder once");
            string dir = resumeDir ?? outDir
                ?? throw new UsageException("--resume needs the run folder: --resume DIR, or --resume with --out DIR");
            if (!Directory.Exists(dir))
                throw new CliException($"--resume {dir}: no such folder; expected the run folder of an earlier 'ddpm train'");
            var saved = RunConfig.Load(Path.Combine(dir, "config.json"));

            var config = run.Resume(parse, typed, saved);
            if (typed.Steps is not null || typed.Minutes is not null) config = config with { Steps = typed.Steps, Minutes = typed.Minutes };
            if (config.Steps is null && config.Minutes is null) config = config with { Steps = DefaultSteps };
            return new TrainingRun(context, config, dir, deviceChoice, resuming: true).Run();
        });
        return command;
    }

    /// <summary>
    /// The options that set a field of <see cref="RunConfig"/>, each bound to its field once: those a
    /// resumed run keeps (data, model, optimizer: another value is refused) and those it may change (how
    /// often to write). Steps, minutes, folders and the device are handled by the command itself.
    /// </summary>
    private sealed class RunOptions
    {
        private readonly List<(Option Option, Func<ParseResult, RunConfig, RunConfig> Set, Func<RunConfig, object?>? Get)> bindings = new();

        /// <summary>An option a resumed run must keep: <paramref name="get"/> reads the field to compare.</summary>
        public Option<T> Kept<T>(Option<T> option, Func<RunConfig, T, RunConfig> set, Func<RunConfig, T> get) => Add(option, set, c => get(c));

        /// <summary>An option a resumed run may change.</summary>
        public Option<T> Changeable<T>(Option<T> option, Func<RunConfig, T, RunConfig> set) => Add(option, set, null);

        private Option<T> Add<T>(Option<T> option, Func<RunConfig, T, RunConfig> set, Func<RunConfig, object?>? get)
        {
            bindings.Add((option, (parse, c) => set(c, parse.GetValue(option)!), get));
            return option;
        }

        /// <summary>Every bound option's value, given or default, set on <paramref name="config"/>.</summary>
        public RunConfig Apply(ParseResult parse, RunConfig config) => bindings.Aggregate(config, (c, b) => b.Set(parse, c));

        /// <summary>
        /// The run's <paramref name="saved"/> config with the changeable options the user gave; a kept option
        /// given with another value than the run's is refused in one line.
        /// </summary>
        public RunConfig Resume(ParseResult parse, RunConfig typed, RunConfig saved)
        {
            var config = saved;
            foreach (var (option, set, get) in bindings.Where(b => parse.WasGiven(b.Option)))
            {
                if (get is null)
                {
                    config = set(parse, config);
                    continue;
                }
                object? mine = get(typed), theirs = get(saved);
                if (!Equals(mine, theirs))
                    throw new UsageException($"{option.Name} {mine} differs from the run's {(theirs is null ? "default" : theirs.ToString())}; a resumed run keeps its data, model and optimizer settings");
            }
            return config;
        }
    }

    /// <summary>
    /// Whether the device this run gets is the CPU accelerator: <c>--device cpu</c> (or DDPM_DEVICE=cpu), or
    /// <c>auto</c> on a machine where ILGPU sees no CUDA or OpenCL device.
    /// </summary>
    private static bool OnlyCpu(string? deviceChoice)
    {
        string choice = (deviceChoice ?? Environment.GetEnvironmentVariable(ComputeDevice.EnvironmentVariable) ?? "auto").Trim().ToLowerInvariant();
        if (choice == "cpu") return true;
        if (choice != "auto") return false;
        return ComputeDevice.Enumerate().All(d => d.Kind == DeviceKind.Cpu);
    }
}
