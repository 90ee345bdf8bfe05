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

    /// <summary>The shared CPU accelerator.</summary>
    public static ComputeDevice Cpu => cpu ??= ComputeDevice.OpenCpu();

    [OneTimeTearDown]
    public void DisposeDevice()
    {
        cpu?.Dispose();
        cpu = null;
    }
}
