using System.Globalization;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Bench;

/// <summary>
/// <c>bench --sweep [--quick] [--family NAME]... [--out DIR]</c>: every kernel family (or the ones named) over a
/// range of sizes, written per family as CSV, JSON, markdown and PNG (<see cref="SweepReport"/>) into DIR
/// (default <c>sweep</c>), plus <c>README.md</c> there: the device header and every family's table.
/// </summary>
public static class SweepCommand
{
    /// <summary>Parses the sweep's options (everything but <c>--sweep</c>), runs it; 0, or 2 for a bad option, 1 for no device.</summary>
    public static int Run(IReadOnlyList<string> args)
    {
        var families = new List<string>();
        string folder = "sweep";
        for (int i = 0; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "--quick":
                    Settings.Quick = true;
                    break;
                case "-h" or "--help" or "-?":
                    Console.WriteLine($"usage: --sweep [--quick] [--family {string.Join('|', SweepFamily.Names)}]... [--out DIR] [--batch N]; docs/benchmarks.md");
                    return 0;
                case "--family" when i + 1 < args.Count:
                    foreach (var name in args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        if (!SweepFamily.Names.Contains(name))
                            return Refuse($"--family {name}: unknown; expected one of {string.Join(", ", SweepFamily.Names)}");
                        families.Add(name);
                    }
                    break;
                case "--out" when i + 1 < args.Count:
                    folder = args[++i];
                    break;
                case "--batch" when i + 1 < args.Count && int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out int b) && b > 0:
                    Settings.BatchOverride = b;
                    i++;
                    break;
                default:
                    return Refuse($"--sweep: unexpected '{args[i]}'; usage: --sweep [--quick] [--family {string.Join('|', SweepFamily.Names)}]... [--out DIR] [--batch N]");
            }
        }
        if (families.Count == 0) families.AddRange(SweepFamily.Names);

        ComputeDevice device;
        try
        {
            device = Settings.BindDevice();
        }
        catch (DeviceUnavailableException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        Console.WriteLine($"IlgpuDdpm bench --sweep — {(Settings.Quick ? "quick" : "full")}, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, device: {device.Description}");
        var runner = Settings.Quick ? new SweepRunner(0.25, 5, Console.Out) : new SweepRunner(1.0, 5, Console.Out);
        var header = runner.MeasurePeaks(device);
        var index = new System.Text.StringBuilder($"# bench --sweep\n\n{SweepReport.HeaderLine(header)}\n\n");
        foreach (var name in families)
        {
            var result = runner.Run(SweepFamily.Get(name), header);
            var paths = SweepReport.Write(result, folder);
            Console.WriteLine($"{name}: {string.Join(", ", paths)}");
            index.Append(SweepReport.Markdown(result)).Append($"\n![{name}]({name}.png)\n\n");
        }
        File.WriteAllText(Path.Combine(folder, "README.md"), index.ToString());
        Settings.CloseDevice();
        return 0;
    }

    private static int Refuse(string message)
    {
        Console.Error.WriteLine($"error: {message}");
        return 2;
    }
}
