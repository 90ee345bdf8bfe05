using System.CommandLine;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Cli.Commands;

/// <summary>
/// The options of the commands that run a trained model (sample, eval, forward) — <c>--checkpoint</c>,
/// <c>--raw-weights</c>, <c>--device</c> — and the one way they open it: the checkpoint is found first
/// (so a wrong path is reported before any device work), then the device, then the weights.
/// </summary>
internal sealed class ModelOptions
{
    /// <summary><c>--checkpoint DIR|FILE</c>.</summary>
    public Option<string> Checkpoint { get; } = CliOptions.Checkpoint();

    /// <summary><c>--raw-weights</c>.</summary>
    public Option<bool> RawWeights { get; } = CliOptions.RawWeights();

    /// <summary><c>--device</c>.</summary>
    public Option<string?> Device { get; } = CliOptions.Device();

    /// <summary>The checkpoint path the user gave.</summary>
    public string CheckpointPath(ParseResult parse) => parse.GetValue(Checkpoint)!;

    /// <summary>Opens the device and loads the model (EMA weights unless <c>--raw-weights</c>); dispose to free both.</summary>
    public OpenedModel Open(CliContext context, ParseResult parse)
    {
        string path = CheckpointPath(parse);
        Diffusion.Checkpoints.Checkpoint.ModelPath(path);
        var lease = context.OpenDevice(parse.GetValue(Device));
        try
        {
            return new OpenedModel(lease, Diffusion.Checkpoints.Checkpoint.Load(lease.Device, path, useEma: !parse.GetValue(RawWeights)));
        }
        catch
        {
            lease.Dispose();
            throw;
        }
    }

    /// <summary>A loaded model on its device.</summary>
    public sealed class OpenedModel(CliContext.DeviceLease lease, LoadedModel loaded) : IDisposable
    {
        /// <summary>The device the model lives on.</summary>
        public ComputeDevice Device => lease.Device;

        /// <summary>The model, its schedule, step and config.</summary>
        public LoadedModel Loaded => loaded;

        /// <summary>"EMA" or "raw".</summary>
        public string Weights => loaded.UsedEma ? "EMA" : "raw";

        /// <summary>"ch 16, … at step 1,000 (EMA weights), T = 1000": what the commands print about the model.</summary>
        public string Description => $"{loaded.Config} at step {loaded.Step:N0} ({Weights} weights), T = {loaded.Schedule.Timesteps}";

        /// <summary>Frees the model, then releases the device.</summary>
        public void Dispose()
        {
            loaded.Dispose();
            lease.Dispose();
        }
    }
}
