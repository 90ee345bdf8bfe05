using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests;

/// <summary>
/// One CPU accelerator for the whole run: compiling a kernel family costs far more than running it on
/// the small shapes the tests use, so every fixture shares this device (and its kernel cache).
/// </summary>
[SetUpFixture]
public sealed class TestDevice
{
    private static ComputeDevice? cpu;
    private static ComputeDevice? grouped;

    /// <summary>The shared CPU accelerator.</summary>
    public static ComputeDevice Cpu => cpu ??= ComputeDevice.OpenCpu();

    /// <summary>
    /// A second CPU accelerator for the fixtures that test the GPU (shared-memory, barrier) variants of a
    /// family. Once ILGPU's CPU accelerator has run a group of 256 threads, every later launch on it is
    /// much slower (its thread pool grows and every launch wakes all of it), so those tests must not
    /// share <see cref="Cpu"/> with the rest of the suite.
    /// </summary>
    public static ComputeDevice Grouped => grouped ??= ComputeDevice.OpenCpu();

    [OneTimeTearDown]
    public void DisposeDevice()
    {
        cpu?.Dispose();
        cpu = null;
        grouped?.Dispose();
        grouped = null;
    }
}
