using System.Globalization;
using System.Text;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Order;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Bench;

/// <summary>
/// IlgpuDdpm's benchmarks (DESIGN.md §7), run with BenchmarkDotNet's in-process toolchain so the published
/// program needs only the .NET runtime: <c>dotnet IlgpuDdpm.Bench.dll [--quick] [--batch N] [BenchmarkDotNet
/// options, e.g. --filter *Conv*]</c>. The device comes from DDPM_DEVICE (auto: CUDA, then OpenCL, then CPU).
/// </summary>
public static class Program
{
    private static readonly Type[] Benchmarks =
    [
        typeof(PeakBenchmarks),
        typeof(ConvBenchmarks),
        typeof(MatmulBenchmarks),
        typeof(AttentionBenchmarks),
        typeof(NormBenchmarks),
        typeof(ElementwiseBenchmarks),
        typeof(OptimBenchmarks),
        typeof(DiffusionBenchmarks),
        typeof(NetworkBenchmarks),
    ];

    /// <summary>Parses our options, opens the device, runs BenchmarkDotNet, prints the throughput table.</summary>
    public static int Main(string[] args)
    {
        // bench --sweep: every family over a range of sizes, written as CSV, JSON, markdown and PNG (SweepCommand).
        if (args.Contains("--sweep")) return SweepCommand.Run([.. args.Where(a => a != "--sweep")]);
        var rest = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick":
                    Settings.Quick = true;
                    break;
                case "--batch" when i + 1 < args.Length && int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out int b) && b > 0:
                    Settings.BatchOverride = b;
                    i++;
                    break;
                case "--batch":
                    Console.Error.WriteLine("--batch needs a positive integer");
                    return 2;
                case "-h" or "--help" or "-?":
                    PrintUsage();
                    return 0;
                default:
                    rest.Add(args[i]);
                    break;
            }
        }
        // Without a filter BenchmarkDotNet asks interactively which benchmarks to run: run them all instead.
        if (!rest.Any(a => a is "--filter" or "-f" or "--allCategories" or "--anyCategories" or "--list" or "--info" or "--version"))
            rest.AddRange(["--filter", "*"]);

        ComputeDevice device;
        try
        {
            device = Settings.Device;
        }
        catch (DeviceUnavailableException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }

        Console.WriteLine($"IlgpuDdpm bench — {(Settings.Quick ? "quick" : "full")} run, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
        foreach (var line in device.SelectionReport) Console.WriteLine($"  {line}");
        Console.WriteLine($"device: {device.Description}");
        Console.WriteLine($"presets: {string.Join(", ", Settings.Presets)}; batch {Settings.Batch}; {Settings.Launches} launch(es) per measured invocation");
        foreach (var preset in PresetShape.Active)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"model {preset.Name} {preset.ImageSize}x{preset.ImageSize}x{preset.InChannels}: {preset.ParameterCount:N0} parameters, forward {preset.Summary.TotalGFlop:F4} GFLOP per image"));
        // bench/runtimeconfig.template.json turns tiered compilation off: on the CPU accelerator the kernels are .NET
        // code, and a kernel first measured at tier 0 (or half-way through tiering) would understate the peak.
        string? tieringSetting = Environment.GetEnvironmentVariable("DOTNET_TieredCompilation")
                                 ?? AppContext.GetData("System.Runtime.TieredCompilation")?.ToString();
        string tiering = tieringSetting is "0" || string.Equals(tieringSetting, "false", StringComparison.OrdinalIgnoreCase) ? "off" : "on";
        Console.WriteLine($"host: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}, tiered compilation {tiering}");
        Console.WriteLine();

        List<Summary> summaries;
        try
        {
            summaries = BenchmarkSwitcher.FromTypes(Benchmarks).Run(rest.ToArray(), CreateConfig()).ToList();
        }
        catch (Exception e)
        {
            // E.g. the in-process timeout: the benchmark's thread may still be launching kernels, so the device is
            // left open (disposing it under a running kernel crashes the process) and the process ends here.
            Console.Error.WriteLine($"error: the benchmark run failed: {e}");
            Console.Out.Flush();
            Environment.Exit(1);
            return 1;
        }
        var reports = summaries.SelectMany(s => s.Reports).ToList();
        if (reports.Count > 0) Console.WriteLine(ThroughputTable(reports));
        Settings.CloseDevice();
        if (summaries.Any(s => s.HasCriticalValidationErrors) || reports.Any(r => !r.Success))
        {
            Console.Error.WriteLine("some benchmarks failed: see the log above");
            return 1;
        }
        return 0;
    }

    private static void PrintUsage()
    {
        Console.WriteLine("""
            IlgpuDdpm.Bench — kernel, train-step and sampling throughput against the device's measured peak.
            usage: dotnet IlgpuDdpm.Bench.dll [--quick] [--batch N] [BenchmarkDotNet options]
              --quick      few iterations, only the small-preset shapes, batch 8 (CPU accelerator) or 64 (GPU)
              --batch N    images per batch for the network-shaped cases
              --sweep      each kernel family over a range of sizes, with the device's measured peaks: CSV, JSON,
                           markdown and a PNG plot per family; [--family NAME]... [--out DIR] (default sweep/)
              DDPM_DEVICE  auto (default), cuda, opencl or cpu
            BenchmarkDotNet options pass through, e.g. --filter '*Conv*', --list flat, --artifacts DIR.
            """);
    }

    /// <summary>
    /// The in-process (Reflection.Emit) toolchain — no project generation, no SDK — with a 10-minute limit per
    /// benchmark, one launch, unroll factor 1 and no overhead evaluation (each invocation ends in a device
    /// synchronisation, so there is nothing to unroll or subtract).
    /// </summary>
    internal static Job BaseJob() => Job.Default
        .WithToolchain(new InProcessEmitToolchain(TimeSpan.FromMinutes(10), logOutput: true))
        .WithLaunchCount(1)
        .WithUnrollFactor(1)
        .WithEvaluateOverhead(false);

    /// <summary>
    /// Loggers, columns, exporter, validators, order and artifacts. The jobs come from each class's
    /// <see cref="KernelJobAttribute"/> or <see cref="NetworkJobAttribute"/>.
    /// </summary>
    private static IConfig CreateConfig()
    {
        return ManualConfig.CreateEmpty()
            .AddLogger(ConsoleLogger.Default)
            .AddColumnProvider(DefaultColumnProviders.Instance)
            .AddColumn(new LaunchesColumn(), new ThroughputColumn(), new PeakFractionColumn())
            .AddExporter(MarkdownExporter.GitHub)
            .AddValidator(DefaultConfig.Instance.GetValidators().ToArray())
            // The 100 ms iterations of --quick are a deliberate trade: no "MinIterationTime" warning for them.
            .AddAnalyser(DefaultConfig.Instance.GetAnalysers().Where(a => !(Settings.Quick && a.Id == "MinIterationTime")).ToArray())
            .WithOrderer(new DefaultOrderer(SummaryOrderPolicy.Declared, MethodOrderPolicy.Declared))
            .WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(40))
            .WithArtifactsPath(Path.Combine(Path.GetTempPath(), "IlgpuDdpm.Bench.Artifacts"))
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
    }

    /// <summary>
    /// Every case: median time per launch, the spread of the iterations (standard deviation over mean), throughput and
    /// fraction of the peak measured in this run.
    /// </summary>
    private static string ThroughputTable(IReadOnlyList<BenchmarkReport> reports)
    {
        var peaks = Throughput.FindPeaks(reports);
        var rows = new List<string[]> { new[] { "Benchmark", "Case", "Time/launch", "± sd", "Throughput", "% of peak" } };
        foreach (var r in reports)
        {
            string name = $"{r.BenchmarkCase.Descriptor.Type.Name.Replace("Benchmarks", "")}.{r.BenchmarkCase.Descriptor.WorkloadMethod.Name}";
            var work = Throughput.WorkOf(r.BenchmarkCase);
            string caseName = r.BenchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "Case")?.Value?.ToString() ?? "";
            if (work is not { } w || Throughput.Seconds(r) is not { } s)
            {
                rows.Add([name, caseName, "failed", "-", "-", "-"]);
                continue;
            }
            var stats = r.ResultStatistics!;
            string spread = stats.N > 1 && stats.Mean > 0 ? string.Format(CultureInfo.InvariantCulture, "{0:F0} %", 100 * stats.StandardDeviation / stats.Mean) : "-";
            rows.Add([name, caseName, Throughput.FormatSeconds(s / w.Launches), spread, Throughput.FormatRate(w, s),
                      Throughput.FormatFraction(Throughput.FractionOfPeak(w, s, peaks))]);
        }
        int[] widths = Enumerable.Range(0, 6).Select(c => rows.Max(row => row[c].Length)).ToArray();
        var text = new StringBuilder();
        string flopsPeak = double.IsNaN(peaks.FlopsPerSecond) ? "not measured" : Throughput.Scaled(peaks.FlopsPerSecond, "FLOP/s");
        string bytesPeak = double.IsNaN(peaks.BytesPerSecond) ? "not measured" : Throughput.Scaled(peaks.BytesPerSecond, "B/s");
        text.AppendLine(CultureInfo.InvariantCulture,
            $"Throughput against the peak measured in this run: {flopsPeak} (Peak.MultiplyAdd), {bytesPeak} (best of Peak.Copy, Peak.GridStrideCopy)");
        for (int i = 0; i < rows.Count; i++)
        {
            text.AppendLine("| " + string.Join(" | ", rows[i].Select((cell, c) => c >= 2 ? cell.PadLeft(widths[c]) : cell.PadRight(widths[c]))) + " |");
            if (i == 0) text.AppendLine("|" + string.Join("|", widths.Select((wd, c) => c >= 2 ? new string('-', wd + 1) + ":" : ":" + new string('-', wd + 1))) + "|");
        }
        return text.ToString();
    }
}
