using System.CommandLine;
using IlgpuDdpm.Kernels.Checks;
using Spectre.Console;

namespace IlgpuDdpm.Cli.Commands;

/// <summary><c>ddpm selfcheck</c>: every kernel family on the chosen device against the CPU accelerator.</summary>
internal static class SelfCheckCommand
{
    public static Command Create(CliContext context)
    {
        var device = CliOptions.Device();
        var verbose = new Option<bool>("--verbose") { Description = "Also list every launch's difference." };
        var command = new Command("selfcheck",
            "Run representative launches of every kernel family (Conv, Matmul, Attention, Norm, Reduce, Elementwise, Resample, Random, Optim, " +
            "Diffusion, Peak) with identical inputs on the device and on the CPU accelerator, and compare: the largest relative difference " +
            "per family against that family's tolerance. Exit code 1 if any family fails. On a CPU-only machine the CPU is compared with itself.")
        {
            device, verbose,
        };
        command.SetAction(parse =>
        {
            using var lease = context.OpenDevice(parse.GetValue(device));
            var dev = lease.Device;
            CliContext.DeviceLease? referenceLease = dev.IsCpu ? null : context.OpenDevice("cpu");
            try
            {
                var reference = referenceLease?.Device ?? dev;
                context.Output.WriteLine($"device:    {Format.Device(dev)}");
                context.Output.WriteLine(dev.IsCpu
                    ? "reference: the same CPU accelerator (no other device chosen: every difference must be 0)"
                    : $"reference: {Format.Device(reference)}");
                var report = SelfCheck.Run(dev, reference, r =>
                {
                    if (!context.Interactive) context.Output.WriteLine($"  {r.Family,-12} {(r.Passed ? "PASS" : "FAIL")}  max rel. diff {Format.Num(r.MaxRelativeDifference, "0.00e+00")} (tolerance {Format.Num(r.Tolerance, "0e+00")}, {r.Launches} launches)");
                });

                var table = new Table().Title("kernel families: device vs CPU accelerator");
                table.AddColumn("family");
                table.AddColumn(new TableColumn("launches").RightAligned());
                table.AddColumn(new TableColumn("max rel. diff").RightAligned());
                table.AddColumn(new TableColumn("tolerance").RightAligned());
                table.AddColumn("worst launch");
                table.AddColumn("result");
                foreach (var r in report.Families)
                    table.AddRow(r.Family, r.Launches.ToString(), Format.Num(r.MaxRelativeDifference, "0.00e+00"), Format.Num(r.Tolerance, "0e+00"),
                        Markup.Escape(r.WorstLaunch), r.Passed ? "PASS" : "[red]FAIL[/]");
                context.Console.Write(table);
                if (parse.GetValue(verbose))
                    foreach (var l in report.Launches)
                        context.Output.WriteLine($"  {l.Family,-12} {Format.Num(l.RelativeDifference, "0.00e+00"),9}  {Format.Num(l.Seconds, "F2"),6}s {Format.Num(l.ReferenceSeconds, "F2"),6}s  {l.Name}{(l.Error is null ? "" : $": {l.Error}")}");
                int failed = report.Families.Count(r => !r.Passed);
                context.Output.WriteLine(failed == 0
                    ? $"selfcheck PASSED: {report.Families.Count} families on {dev.Kind}"
                    : $"selfcheck FAILED: {failed} of {report.Families.Count} families outside tolerance on {dev.Kind}");
                if (failed > 0)
                    context.Error.WriteLine($"ddpm selfcheck: {failed} kernel famil{(failed == 1 ? "y" : "ies")} differ from the CPU accelerator: {string.Join(", ", report.Families.Where(r => !r.Passed).Select(r => r.Family))}");
                return failed == 0 ? 0 : Program.FailureExitCode;
            }
            finally
            {
                referenceLease?.Dispose();
            }
        });
        return command;
    }
}
