using System.CommandLine;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;
using Spectre.Console;

namespace IlgpuDdpm.Cli.Commands;

/// <summary><c>ddpm summary</c>: the U-Net of a preset layer by layer, with parameter and FLOP totals.</summary>
internal static class SummaryCommand
{
    public static Command Create(CliContext context)
    {
        var preset = new Option<string>("--preset")
        {
            Description = $"Model preset: {string.Join(", ", UNetConfig.PresetNames)}.",
            DefaultValueFactory = _ => "small",
        }.OneOf([.. UNetConfig.PresetNames]);
        var size = new Option<int?>("--size")
        {
            Description = "Image height and width (default: 28 for tiny and small, as Fashion-MNIST; 32 for ddpm-cifar10).",
        }.Positive();
        var channels = new Option<int?>("--channels")
        {
            Description = "Image channels, 1 (grey) or 3 (RGB) (default: 1 for tiny and small, 3 for ddpm-cifar10).",
        }.Positive();
        var batch = new Option<int?>("--batch")
        {
            Description = "Also count, by running each once on the device with B images, the kernel launches and host-device synchronisations of one forward pass, one train step (one that logs nothing) and one sampling step, next to their FLOPs. Takes a few train steps' time. On the CPU accelerator a second table gives the launches of the kernels a GPU runs, counted without running them.",
            HelpName = "B",
        }.Positive();
        var device = CliOptions.Device();
        var command = new Command("summary", "Print the U-Net of a preset layer by layer: output shape, parameters and forward GFLOP per image, with totals. Needs no device unless --batch asks for the launch counts.")
        {
            preset, size, channels, batch, device,
        };
        command.SetAction(parse =>
        {
            string name = parse.GetValue(preset)!.Trim().ToLowerInvariant();
            bool cifar = name == "ddpm-cifar10";
            int imageSize = parse.GetValue(size) ?? (cifar ? 32 : 28), imageChannels = parse.GetValue(channels) ?? (cifar ? 3 : 1);
            UNetConfig config;
            try { config = UNetConfig.FromPreset(name, imageSize, imageChannels); }
            catch (ArgumentException e) { throw new CliException($"--preset {name} --size {imageSize}: {Program.OneLine(e.Message)}"); }
            var summary = ModelSummary.For(config);
            Print(context, name, summary);
            if (parse.GetValue(batch) is { } b)
            {
                using var lease = context.OpenDevice(parse.GetValue(device));
                context.Output.WriteLine($"device: {Format.Device(lease.Device)}");
                PrintCounts(context, summary, b, StepCounts.Measure(lease.Device, config, b), "counted on the device");
                // The CPU accelerator's own kernels pack their operands in launches of their own; a GPU runs the tiled
                // GEMM and the tree reductions instead, and its launches are the ones that cost microseconds each.
                if (lease.Device.IsCpu)
                    PrintCounts(context, summary, b, StepCounts.Count(lease.Device, config, b, gpuVariants: true), "with the kernels a GPU runs (counted, not run)");
            }
            return 0;
        });
        return command;
    }

    /// <summary>The launch table: forward, train step and sampling step, each with its FLOPs for a batch of <paramref name="batch"/>.</summary>
    internal static void PrintCounts(CliContext context, ModelSummary summary, int batch, StepCounts counts, string how)
    {
        var table = new Table().Title(Markup.Escape($"per step, batch {batch}, {how}"));
        table.AddColumn("step");
        table.AddColumn(new TableColumn("kernel launches").RightAligned());
        table.AddColumn(new TableColumn("clears").RightAligned());
        table.AddColumn(new TableColumn("host syncs").RightAligned());
        table.AddColumn(new TableColumn("GFLOP").RightAligned());
        void Row(string what, DeviceCount c, double gflop) =>
            table.AddRow(what, Format.Count(c.Launches), Format.Count(c.Clears), Format.Count(c.Synchronizations), Format.Num(gflop * batch, "F3"));
        Row("forward", counts.Forward, summary.TotalGFlop);
        Row("train step (logs nothing)", counts.TrainStep, summary.TrainingGFlopPerImage);
        Row("sampling step", counts.SamplingStep, summary.TotalGFlop);
        context.Console.Write(table);
        context.Output.WriteLine($"launches {how}: forward {counts.Forward.Launches}, train step {counts.TrainStep.Launches}, sampling step {counts.SamplingStep.Launches} " +
                                 $"(+ {counts.Forward.Clears}, {counts.TrainStep.Clears}, {counts.SamplingStep.Clears} clears)");
    }

    internal static void Print(CliContext context, string preset, ModelSummary summary)
    {
        var table = new Table().Title(Markup.Escape($"U-Net '{preset}': {summary.Config}"));
        table.AddColumn("layer");
        table.AddColumn("what");
        table.AddColumn("output");
        table.AddColumn(new TableColumn("parameters").RightAligned());
        table.AddColumn(new TableColumn("GFLOP/image").RightAligned());
        foreach (var row in summary.Rows)
            table.AddRow(Markup.Escape(row.Name), Markup.Escape(row.Description), string.Join("×", row.OutputShape),
                Format.Count(row.Parameters), Format.Num(row.GFlop, "F4"));
        table.AddRow("total", "", "", Format.Count(summary.TotalParameters), Format.Num(summary.TotalGFlop, "F4"));
        context.Console.Write(table);
        context.Output.WriteLine($"parameters: {Format.Count(summary.TotalParameters)} ({Format.Bytes(summary.TotalParameters * 4)} as float32)");
        context.Output.WriteLine($"forward: {Format.Num(summary.TotalGFlop, "F3")} GFLOP per image; a training step ≈ {Format.Num(summary.TrainingGFlopPerImage, "F3")} GFLOP per image (forward + backward)");
    }
}
