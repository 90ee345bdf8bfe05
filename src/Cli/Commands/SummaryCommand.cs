using System.CommandLine;
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
        var command = new Command("summary", "Print the U-Net of a preset layer by layer: output shape, parameters and forward GFLOP per image, with totals. Needs no device.")
        {
            preset, size, channels,
        };
        command.SetAction(parse =>
        {
            string name = parse.GetValue(preset)!.Trim().ToLowerInvariant();
            bool cifar = name == "ddpm-cifar10";
            int imageSize = parse.GetValue(size) ?? (cifar ? 32 : 28), imageChannels = parse.GetValue(channels) ?? (cifar ? 3 : 1);
            UNetConfig config;
            try { config = UNetConfig.FromPreset(name, imageSize, imageChannels); }
            catch (ArgumentException e) { throw new CliException($"--preset {name} --size {imageSize}: {Program.OneLine(e.Message)}"); }
            Print(context, name, ModelSummary.For(config));
            return 0;
        });
        return command;
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
