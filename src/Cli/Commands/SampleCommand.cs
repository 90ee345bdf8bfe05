using System.CommandLine;
using System.Diagnostics;
using IlgpuDdpm.Cli.Training;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Images;

namespace IlgpuDdpm.Cli.Commands;

/// <summary><c>ddpm sample</c>: images from a checkpoint with the DDPM (Algorithm 2) or DDIM sampler, as a PNG grid and optionally a GIF of the reverse process.</summary>
internal static class SampleCommand
{
    public static Command Create(CliContext context)
    {
        var checkpoint = CliOptions.Checkpoint();
        var count = new Option<int>("--n") { Description = "Number of images.", DefaultValueFactory = _ => 64 }.Range(1, 4096);
        var sampler = new Option<string>("--sampler")
        {
            Description = "ddpm: ancestral sampling, Algorithm 2 of the DDPM paper, every one of the T steps; ddim: deterministic DDIM (η = 0) on a subsequence of steps.",
            DefaultValueFactory = _ => "ddpm",
        }.OneOf("ddpm", "ddim");
        var steps = new Option<int>("--steps")
        {
            Description = "Sampler steps: 0 means T for ddpm and 50 for ddim. Fewer ddpm steps are not allowed; ddim takes any count up to T.",
            HelpName = "S",
            DefaultValueFactory = _ => 0,
        }.NonNegative();
        var variance = new Option<string>("--variance")
        {
            Description = "Reverse-process variance σ_t²: large = β_t, small = β̃_t (the posterior's). Both are in the DDPM paper.",
            DefaultValueFactory = _ => "large",
        }.OneOf("large", "small");
        var noClip = new Option<bool>("--no-clip") { Description = "Do not clip the predicted x_0 to [-1, 1] at each step." };
        var raw = CliOptions.RawWeights();
        var seed = CliOptions.Seed("Seed of the sampler's noise (same seed, same images on every accelerator).");
        var output = new Option<string>("--out") { Description = "PNG file of the image grid.", HelpName = "FILE", DefaultValueFactory = _ => "grid.png" };
        var gif = new Option<string?>("--gif")
        {
            Description = "Also write an animated GIF of the reverse process x_T → x_0 (to reverse.gif when no FILE is given).",
            HelpName = "FILE",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var frames = new Option<int>("--frames") { Description = "Frames in the GIF (evenly spaced over the sampler's steps).", DefaultValueFactory = _ => 50 }.Range(2, 1000);
        var device = CliOptions.Device();

        var command = new Command("sample", "Draw images from a trained model and save them as a PNG grid (and, with --gif, an animation of the reverse process).")
        {
            checkpoint, count, sampler, steps, variance, noClip, raw, seed, output, gif, frames, device,
        };
        command.SetAction(parse =>
        {
            string outPath = parse.GetValue(output)!;
            string? gifPath = parse.GetResult(gif) is null ? null : parse.GetValue(gif) ?? "reverse.gif";
            CheckWritable(outPath, "--out");
            if (gifPath is not null) CheckWritable(gifPath, "--gif");

            Checkpoint.ModelPath(parse.GetValue(checkpoint)!); // a missing checkpoint is reported before any device work
            using var lease = context.OpenDevice(parse.GetValue(device));
            var dev = lease.Device;
            using var loaded = Checkpoint.Load(dev, parse.GetValue(checkpoint)!, useEma: !parse.GetValue(raw));
            int timesteps = loaded.Schedule.Timesteps;
            var kind = parse.GetValue(sampler) == "ddim" ? SamplerKind.Ddim : SamplerKind.Ddpm;
            int requested = parse.GetValue(steps);
            var options = new SampleOptions
            {
                Count = parse.GetValue(count),
                Sampler = kind,
                Steps = requested,
                Variance = parse.GetValue(variance) == "small" ? VarianceKind.Small : VarianceKind.Large,
                Clip = !parse.GetValue(noClip),
                Seed = parse.GetValue(seed),
                FrameCount = gifPath is null ? 0 : parse.GetValue(frames),
            };
            // The step-count rule is the sampler's (ISampler.Timesteps); its one-line refusal is a usage error here.
            var plan = Samplers.For(options);
            int total;
            try { total = plan.Timesteps(loaded.Schedule).Length; }
            catch (ArgumentException e) { throw new UsageException($"--steps {requested}: {e.Message}"); }

            context.Output.WriteLine($"device: {Format.Device(dev)}");
            context.Output.WriteLine($"model: {loaded.Config} at step {loaded.Step:N0} ({(loaded.UsedEma ? "EMA" : "raw")} weights), T = {timesteps}");
            context.Output.WriteLine($"sampling {options.Count} images: {plan.Describe(loaded.Schedule)}, seed {options.Seed}");

            using var diffusion = new GaussianDiffusion(dev, loaded.Schedule);
            var clock = Stopwatch.StartNew();
            // The library reports image-steps done (all images advance together); the bar shows sampler steps.
            var result = ProgressDisplay.Run(context, "sampling", total, _ => false, display =>
                diffusion.Sample(loaded.Model, options, (done, all) =>
                {
                    double step = (double)done * total / Math.Max(all, 1);
                    display.Update(step, $"sampling: step {(int)step}/{total}");
                }));
            double seconds = clock.Elapsed.TotalSeconds;

            ImageGrid.SavePng(outPath, result.Images, result.Count, result.Channels, result.Height, result.Width);
            context.Output.WriteLine($"wrote {outPath}: {result.Count} images of {result.Channels}x{result.Height}x{result.Width} in {Format.Duration(TimeSpan.FromSeconds(seconds))} ({Format.Num(result.Count / Math.Max(seconds, 1e-9), "F2")} images/s)");
            if (gifPath is not null)
            {
                ImageGrid.SaveGif(gifPath, result.Frames, result.Count, result.Channels, result.Height, result.Width, frameDelayMs: 60, lastFrameDelayMs: 2000);
                context.Output.WriteLine($"wrote {gifPath}: {result.Frames.Count} frames, x_T to x_0");
            }
            return 0;
        });
        return command;
    }

    /// <summary>The output's folder must exist or be creatable, and the path must not be a folder.</summary>
    internal static void CheckWritable(string path, string option)
    {
        if (Directory.Exists(path)) throw new UsageException($"{option} {path} is a folder; expected a file name");
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null && File.Exists(dir)) throw new UsageException($"{option} {path}: {dir} is a file, not a folder");
    }
}
