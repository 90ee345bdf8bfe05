using IlgpuDdpm.Kernels.Device;
using Spectre.Console;

namespace IlgpuDdpm.Cli;

/// <summary>
/// What a command runs in: where it writes, whether that is a terminal (progress bars) or not (plain
/// lines), the token that stands for Ctrl-C, and how it gets an accelerator. Tests pass a device factory
/// that hands out one shared CPU accelerator, so the kernels are compiled once per test run.
/// </summary>
internal sealed class CliContext
{
    public CliContext(TextWriter output, TextWriter error, bool interactive, CancellationToken interrupt,
                      Func<string?, ComputeDevice>? openDevice = null, Action<ComputeDevice>? releaseDevice = null)
    {
        Output = output;
        Error = error;
        Interactive = interactive;
        Interrupt = interrupt;
        OpenDeviceFunc = openDevice ?? ComputeDevice.Open;
        ReleaseDeviceAction = releaseDevice ?? (d => d.Dispose());
        Console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = interactive ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = interactive ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = interactive ? InteractionSupport.Yes : InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        // Tables written to a file or pipe are not wrapped to an 80-column guess.
        if (!interactive) Console.Profile.Width = 200;
    }

    /// <summary>Standard output.</summary>
    public TextWriter Output { get; }

    /// <summary>Standard error: one-line errors and warnings.</summary>
    public TextWriter Error { get; }

    /// <summary>Spectre.Console over <see cref="Output"/> (tables; progress bars when interactive).</summary>
    public IAnsiConsole Console { get; }

    /// <summary>True when <see cref="Output"/> is a terminal: live progress bars instead of plain lines.</summary>
    public bool Interactive { get; }

    /// <summary>Set by a command that checks <see cref="Interrupt"/> and stops cleanly (training); otherwise Ctrl-C ends the process.</summary>
    public volatile bool StopsCleanlyOnInterrupt;

    /// <summary>Cancelled by the first Ctrl-C while <see cref="StopsCleanlyOnInterrupt"/> is set.</summary>
    public CancellationToken Interrupt { get; }

    private Func<string?, ComputeDevice> OpenDeviceFunc { get; }

    private Action<ComputeDevice> ReleaseDeviceAction { get; }

    /// <summary>Opens the device named by <c>--device</c> (null: <c>DDPM_DEVICE</c>, else <c>auto</c>).</summary>
    public DeviceLease OpenDevice(string? choice) => new(OpenDeviceFunc(choice), ReleaseDeviceAction);

    /// <summary>A device and what to do with it when the command is done.</summary>
    public sealed class DeviceLease(ComputeDevice device, Action<ComputeDevice> release) : IDisposable
    {
        private bool released;

        public ComputeDevice Device { get; } = device;

        public void Dispose()
        {
            if (released) return;
            released = true;
            release(Device);
        }
    }
}
