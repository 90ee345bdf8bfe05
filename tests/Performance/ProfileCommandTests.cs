using IlgpuDdpm.Cli;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Tests.Cli;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Performance;

/// <summary><c>ddpm train --profile N</c>: the per-family table with the host's line, and no run folder.</summary>
[TestFixture]
public sealed class ProfileCommandTests
{
    private string root = "";

    [SetUp]
    public void CreateData() => root = Directory.CreateTempSubdirectory("ddpm-profile-").FullName;

    [TearDown]
    public void DeleteData() => Directory.Delete(root, recursive: true);

    [Test]
    public void ProfilePrintsTheFamiliesAndTheHostShareAndWritesNoRun()
    {
        string data = CliHarness.WriteIdxDataset(Path.Combine(root, "data"), count: 8, size: 8);
        string cwd = Environment.CurrentDirectory;
        Environment.CurrentDirectory = root; // a run would go to runs/ under it
        try
        {
            var r = CliHarness.Run("train", "--data", data, "--preset", "tiny", "--batch", "2", "--timesteps", "20", "--profile", "2", "--device", "cpu");
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
            foreach (var column in new[] { "family", "launches/step", "total ms", "mean µs", "% of step" })
                Assert.That(r.Output, Does.Contain(column), r.ToString());
            Assert.That(r.Output, Does.Contain("Conv").And.Contain("Norm").And.Contain("MultiTensor").And.Contain("Matmul"), "the families a train step launches");
            Assert.That(r.Output, Does.Contain("host (outside kernels)").And.Contain("host share"));
            Assert.That(Directory.Exists(Path.Combine(root, "runs")), Is.False, "--profile writes no run folder");
        }
        finally
        {
            Environment.CurrentDirectory = cwd;
        }
    }

    [Test]
    public void ProfileRefusesResume()
    {
        var r = CliHarness.Run("train", "--resume", root, "--profile", "2", "--device", "cpu");
        CliHarness.AssertOneLineError(r, Program.UsageExitCode, "--profile", "--resume");
    }

    [Test]
    public void FamilyIsTheOwningKernelsClassOrTheNamespace()
    {
        Assert.That(LaunchProfiler.FamilyOf(typeof(GridStrideKernel<DeviceCounterTests.IotaElements>)), Is.EqualTo(nameof(DeviceCounterTests)));
        Assert.That(LaunchProfiler.KernelName(typeof(GridStrideKernel<DeviceCounterTests.IotaElements>)), Is.EqualTo(nameof(DeviceCounterTests.IotaElements)));
        Assert.That(LaunchProfiler.FamilyOf(typeof(IlgpuDdpm.Kernels.Optim.MultiTensorKernels.SegmentSquaresKernel)), Is.EqualTo("MultiTensor"));
    }
}
