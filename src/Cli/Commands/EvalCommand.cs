using System.CommandLine;
using System.Diagnostics;
using IlgpuDdpm.Cli.Training;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Data;
using Spectre.Console;

namespace IlgpuDdpm.Cli.Commands;

/// <summary><c>ddpm eval</c>: the variational bound in bits/dim on the test split, term by term, and the L_simple loss.</summary>
internal static class EvalCommand
{
    public static Command Create(CliContext context)
    {
        var data = new Option<string>("--data")
        {
            Description = "Data set whose test split is scored (fashion-mnist, mnist, a folder or IDX file); images are resized to the model's size and channels.",
            HelpName = "fashion-mnist|mnist|PATH",
            Required = true,
        };
        var count = new Option<int>("--n") { Description = "Number of test images (the first N of the split; all of them if fewer). Each costs T network evaluations.", DefaultValueFactory = _ => 256 }.Positive();
        var variance = new Option<string>("--variance")
        {
            Description = "Reverse-process variance the bound is computed with: large (β_t) or small (β̃_t).",
            DefaultValueFactory = _ => "large",
        }.OneOf("large", "small");
        var seed = CliOptions.Seed("Seed of the noise q(x_t | x_0) draws of the bound and of L_simple.");

        var model = new ModelOptions();
        var command = new Command("eval",
            "Score a model on the test split: the negative variational bound in bits/dim (L_VLB = L_T + Σ L_t-1 + L_0, the DDPM paper's eq. 5 " +
            "with the discretized decoder of eq. 13) and the L_simple noise-prediction loss.")
        {
            model.Checkpoint, data, count, variance, model.RawWeights, seed, model.Device,
        };
        command.SetAction(parse =>
        {
            using var opened = model.Open(context, parse);
            var (dev, loaded) = (opened.Device, opened.Loaded);
            var cfg = loaded.Config;
            var test = ImageDataset.Load(parse.GetValue(data)!, cfg.ImageSize, cfg.InChannels, DatasetSplit.Test);
            int n = Math.Min(parse.GetValue(count), test.Count);
            var images = test.Data.AsSpan(0, n * test.ImageLength).ToArray();
            ulong noiseSeed = parse.GetValue(seed);
            var kind = parse.GetValue(variance) == "small" ? VarianceKind.Small : VarianceKind.Large;

            context.Output.WriteLine($"device: {Format.Device(dev)}");
            context.Output.WriteLine($"model: {opened.Description}");
            context.Output.WriteLine($"data: {test.Source}, {n:N0} of {test.Count:N0} test images");

            using var diffusion = new GaussianDiffusion(dev, loaded.Schedule);
            var clock = Stopwatch.StartNew();
            var bpd = ProgressDisplay.Run(context, "bits/dim", 1, _ => false, display =>
                diffusion.Bpd(loaded.Model, images, n, noiseSeed, kind, (done, all) => display.Update((double)done / Math.Max(all, 1), $"bound {done}/{all}")));
            double simple = diffusion.SimpleLoss(loaded.Model, images, n, noiseSeed);
            double seconds = clock.Elapsed.TotalSeconds;

            var table = new Table().Title(Markup.Escape($"{n} test images, variance {kind.ToString().ToLowerInvariant()}"));
            table.AddColumn("term");
            table.AddColumn(new TableColumn("bits/dim").RightAligned());
            table.AddRow("L_T (prior)", Format.Num(bpd.PriorTerm, "F4"));
            table.AddRow("Σ L_t-1 (diffusion terms)", Format.Num(bpd.DiffusionTerms, "F4"));
            table.AddRow("L_0 (decoder)", Format.Num(bpd.DecoderTerm, "F4"));
            table.AddRow("total (negative ELBO)", Format.Num(bpd.Total, "F4"));
            context.Console.Write(table);
            context.Output.WriteLine($"L_simple (mean squared error of the predicted noise): {Format.Num(simple, "F5")}");
            context.Output.WriteLine($"took {Format.Duration(TimeSpan.FromSeconds(seconds))}");
            return 0;
        });
        return command;
    }
}
