using IlgpuDdpm.Cli;
using IlgpuDdpm.Kernels.Checks;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>The accelerator self-check: its comparison, and a CPU-only run (the CPU against itself must agree exactly).</summary>
[TestFixture]
public sealed class SelfCheckTests
{
    [Test]
    public void RelativeDifferenceIsRelativeToTheLargestReferenceValue()
    {
        Assert.That(SelfCheck.RelativeDifference([1f, 2f, -4f], [1f, 2f, -4f]), Is.Zero);
        Assert.That(SelfCheck.RelativeDifference([1f, 2.5f, -4f], [1f, 2f, -4f]), Is.EqualTo(0.125).Within(1e-12));
        Assert.That(SelfCheck.RelativeDifference([0f, 1e-3f], [0f, 0f]), Is.EqualTo(1e-3).Within(1e-9));
        Assert.That(SelfCheck.RelativeDifference([float.NaN], [1f]), Is.EqualTo(double.PositiveInfinity));
        Assert.That(SelfCheck.RelativeDifference([1f], [1f, 2f]), Is.EqualTo(double.PositiveInfinity));
    }

    [Test]
    public void EveryFamilyHasProbesAndTheCpuAgreesWithItselfExactly()
    {
        var report = SelfCheck.Run(TestDevice.Cpu, TestDevice.Cpu);
        Assert.That(report.Families.Select(f => f.Family), Is.EqualTo(SelfCheck.Families.Select(f => f.Family)));
        foreach (var f in report.Families)
        {
            Assert.That(f.Launches, Is.GreaterThan(0), f.Family);
            Assert.That(f.MaxRelativeDifference, Is.Zero, $"{f.Family}: {f.WorstLaunch}");
            Assert.That(f.Passed, Is.True);
        }
        Assert.That(report.Launches.All(l => l.Error is null), Is.True,
            string.Join("\n", report.Launches.Where(l => l.Error is not null).Select(l => $"{l.Name}: {l.Error}")));
    }

    [Test]
    public void SelfCheckCommandOnTheCpuPassesAndPrintsEveryFamily()
    {
        var r = CliHarness.Run("selfcheck", "--device", "cpu");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        foreach (var (family, _) in SelfCheck.Families) Assert.That(r.Output, Does.Contain(family));
        Assert.That(r.Output, Does.Contain("selfcheck PASSED"));
        Assert.That(r.Output, Does.Not.Contain("FAIL "));
    }
}
