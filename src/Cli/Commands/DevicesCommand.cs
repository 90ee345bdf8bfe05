using System.CommandLine;
using IlgpuDdpm.Kernels.Device;
using Spectre.Console;

namespace IlgpuDdpm.Cli.Commands;

/// <summary><c>ddpm devices</c>: every accelerator ILGPU sees, and which one <c>auto</c> picks and why.</summary>
internal static class DevicesCommand
{
    public static Command Create(CliContext context)
    {
        var command = new Command("devices",
            "List every accelerator ILGPU can see (kind, memory, compute units) and say which one --device auto picks, and why the others were not taken.");
        command.SetAction(_ => Run(context));
        return command;
    }

    // ILGPU's CPU accelerator reports an unbounded size; what it can really use is the host's memory.
    private static string Memory(DeviceInfo d) =>
        d.Kind == DeviceKind.Cpu ? $"{Format.Bytes(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes)} (host)" : Format.Bytes(d.MemoryBytes);

    private static int Run(CliContext context)
    {
        var devices = ComputeDevice.Enumerate();
        var table = new Table().Title("accelerators");
        table.AddColumn("#");
        table.AddColumn("kind");
        table.AddColumn("name");
        table.AddColumn(new TableColumn("memory").RightAligned());
        table.AddColumn(new TableColumn("compute units").RightAligned());
        table.AddColumn(new TableColumn("threads/group").RightAligned());
        table.AddColumn(new TableColumn("warp").RightAligned());
        for (int i = 0; i < devices.Count; i++)
        {
            var d = devices[i];
            table.AddRow(i.ToString(), d.Kind.ToString(), Markup.Escape(d.Name), Memory(d),
                d.ComputeUnits.ToString(), d.MaxThreadsPerGroup.ToString(), d.WarpSize.ToString());
        }
        context.Console.Write(table);

        using (var lease = context.OpenDevice("auto"))
        {
            context.Output.WriteLine($"auto picks: {Format.Device(lease.Device)}");
            foreach (var line in lease.Device.SelectionReport) context.Output.WriteLine($"  {line}");
        }
        var env = Environment.GetEnvironmentVariable(ComputeDevice.EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(env))
            context.Output.WriteLine($"{ComputeDevice.EnvironmentVariable}={env}: commands without --device use '{env}' instead of auto");
        return 0;
    }
}
