using System.Diagnostics;
using System.Globalization;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;
using Spectre.Console;

namespace IlgpuDdpm.Cli.Training;

/// <summary>
/// <c>ddpm train --profile N</c> (issue 9, point 6): where the time of a train step goes. One warm-up step
/// (it compiles every kernel), then N steps that log nothing, each launch timed and attributed to its kernel
/// struct by <see cref="LaunchProfiler"/> (the stream synchronised around each launch on the CPU accelerator,
/// ILGPU's profiling markers on a GPU). Prints the kernel families — launches per step, total ms, mean µs per
/// launch, share of the steps' wall time — the costliest kernel structs, and the host's share (everything not
/// inside a kernel: launch overhead, the batch upload, the tape's bookkeeping). Writes no run folder.
/// </summary>
internal static class TrainingProfile
{
    /// <summary>Kernel structs listed under the family table.</summary>
    private const int TopKernels = 12;

    public static int Run(CliContext context, RunConfig config, string? deviceChoice, int steps)
    {
        var output = context.Output;
        var (data, modelConfig) = config.LoadTrainingData();
        var schedule = config.BuildSchedule();

        using var lease = context.OpenDevice(deviceChoice);
        var device = lease.Device;
        output.WriteLine($"device: {Format.Device(device)}");
        output.WriteLine($"profile: {config.Preset} ({modelConfig}), batch {config.Batch}, {steps} steps after one warm-up step; " +
                         (device.IsCpu ? "the stream is synchronised around every launch" : "ILGPU profiling markers around every launch"));
        using var model = new UNet(device, modelConfig, config.Seed);
        using var diffusion = new GaussianDiffusion(device, schedule);
        using var trainer = new Trainer(model, diffusion, config.TrainingOptions());
        var sampler = new BatchSampler(data, config.Batch, config.Seed, config.Flip);
        var batch = new float[sampler.BatchLength];
        sampler.Next(batch);
        trainer.TrainStep(batch); // compiles every kernel, fills the pool

        var profiler = new LaunchProfiler();
        var clock = new Stopwatch();
        var before = device.Counters.Snapshot();
        device.Profiler = profiler;
        try
        {
            for (int i = 0; i < steps; i++)
            {
                sampler.Next(batch); // the data pipeline is not part of the step
                clock.Start();
                trainer.TrainStep(batch, readBack: false);
                device.Synchronize();
                clock.Stop();
            }
        }
        finally
        {
            device.Profiler = null;
        }
        var counted = device.Counters.Snapshot() - before;
        Print(context, profiler.Entries, steps, clock.Elapsed.TotalMilliseconds, counted);
        return 0;
    }

    internal static void Print(CliContext context, IReadOnlyList<KernelTime> entries, int steps, double wallMs, DeviceCount counted)
    {
        var inv = CultureInfo.InvariantCulture;
        double kernelMs = entries.Sum(e => e.Milliseconds);
        string Share(double ms) => wallMs > 0 ? (100 * ms / wallMs).ToString("F1", inv) : "-";
        var families = entries.GroupBy(e => e.Family)
            .Select(g => (Family: g.Key, Launches: g.Sum(e => e.Launches), Ms: g.Sum(e => e.Milliseconds)))
            .OrderByDescending(f => f.Ms).ToList();

        var table = new Table().Title(Markup.Escape($"train step profile: {steps} steps, {wallMs / steps:F1} ms per step"));
        table.AddColumn("family");
        table.AddColumn(new TableColumn("launches/step").RightAligned());
        table.AddColumn(new TableColumn("total ms").RightAligned());
        table.AddColumn(new TableColumn("mean µs").RightAligned());
        table.AddColumn(new TableColumn("% of step").RightAligned());
        foreach (var f in families)
            table.AddRow(Markup.Escape(f.Family), ((double)f.Launches / steps).ToString("F0", inv), f.Ms.ToString("F1", inv),
                         (1000 * f.Ms / Math.Max(1, f.Launches)).ToString("F1", inv), Share(f.Ms));
        double hostMs = Math.Max(0, wallMs - kernelMs);
        table.AddRow("host (outside kernels)", "", hostMs.ToString("F1", inv), "", Share(hostMs));
        table.AddRow("total", ((double)entries.Sum(e => e.Launches) / steps).ToString("F0", inv), wallMs.ToString("F1", inv), "", Share(wallMs));
        context.Console.Write(table);

        var top = new Table().Title(Markup.Escape($"the {Math.Min(TopKernels, entries.Count)} costliest kernel structs"));
        top.AddColumn("family");
        top.AddColumn("kernel");
        top.AddColumn(new TableColumn("launches/step").RightAligned());
        top.AddColumn(new TableColumn("total ms").RightAligned());
        top.AddColumn(new TableColumn("mean µs").RightAligned());
        top.AddColumn(new TableColumn("% of step").RightAligned());
        foreach (var e in entries.Take(TopKernels))
            top.AddRow(Markup.Escape(e.Family), Markup.Escape(e.Kernel), ((double)e.Launches / steps).ToString("F0", inv), e.Milliseconds.ToString("F1", inv),
                       (1000 * e.Milliseconds / e.Launches).ToString("F1", inv), Share(e.Milliseconds));
        context.Console.Write(top);
        context.Output.WriteLine(string.Create(inv,
            $"per step: {(double)counted.Launches / steps:F0} launches, {(double)counted.Clears / steps:F0} clears, {(double)counted.Synchronizations / steps:F1} host syncs (one is the profile's own wait at the step's end); host share {Share(hostMs)}% of {wallMs / steps:F1} ms"));
    }
}
