using IlgpuDdpm.Cli;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Kernels;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>
/// Issue 8 item 7: one <see cref="UserError"/> base class for every error shown as one line; the command line
/// reports a user error as its line (exit 1) and anything else as an internal error, by type, not by name.
/// </summary>
[TestFixture]
public sealed class UserErrorTests
{
    private static (int Code, string Line) Report(Exception e)
    {
        var error = new StringWriter();
        var context = new CliContext(TextWriter.Null, error, interactive: false, CancellationToken.None);
        int code = Program.ReportFailure(context, "ddpm x", e);
        var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), error.ToString());
        return (code, lines[0].TrimEnd());
    }

    [Test]
    public void EveryLayersOneLineError_IsAUserError()
    {
        Assert.That(new DeviceUnavailableException("d"), Is.InstanceOf<UserError>());
        Assert.That(new DataException("d"), Is.InstanceOf<UserError>());
        Assert.That(new CheckpointException("c"), Is.InstanceOf<UserError>());
        Assert.That(new CliException("c"), Is.InstanceOf<UserError>());
        Assert.That(new UsageException("u"), Is.InstanceOf<UserError>());
    }

    [Test]
    public void AUserError_IsItsOwnLine_AndABug_SaysInternalError()
    {
        Assert.That(Report(new DataException("data/x: truncated")), Is.EqualTo((Program.FailureExitCode, "ddpm x: data/x: truncated")));
        Assert.That(Report(new UsageException("--n must be positive")), Is.EqualTo((Program.UsageExitCode, "ddpm x: --n must be positive (see 'ddpm x --help')")));
        var bug = Report(new InvalidOperationException("oops"));
        Assert.That(bug.Line, Is.EqualTo("ddpm x: internal error (InvalidOperationException): oops"));
        // An ArgumentException is a bug too: a user's bad value is refused by the command as a UserError first.
        Assert.That(Report(new ArgumentException("bad")).Line, Does.Contain("internal error"));
    }

    [Test]
    public void TheAcceleratorsOwnErrors_AreTranslatedByType()
    {
        var driver = new ILGPU.CapabilityNotSupportedException("the device does not support 64-bit atomics");
        Assert.That(UserError.From(driver), Is.InstanceOf<AcceleratorError>().With.Message.Contains("64-bit atomics"));
        var (code, line) = Report(driver);
        Assert.That(code, Is.EqualTo(Program.FailureExitCode));
        Assert.That(line, Does.StartWith("ddpm x: the accelerator reported an error: the device does not support 64-bit atomics").And.Not.Contain("internal error"));
        Assert.That(UserError.From(new ILGPU.InternalCompilerException("compiler bug")), Is.Null, "ILGPU's compiler errors are bugs");
    }
}
