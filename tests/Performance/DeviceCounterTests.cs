using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Performance;

/// <summary>
/// The device layer's counters (issue 9): every launch path counts one launch, a clear counts one clear, and
/// every wait of the host for the device counts one synchronisation.
/// </summary>
[TestFixture]
public sealed class DeviceCounterTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    // A thread kernel and an element kernel of this test alone: x[i] = i.
    public readonly struct IotaThreads(ILGPU.ArrayView<float> x) : IThreadKernel
    {
        public void Execute(int thread) => x[thread] = thread;
    }

    public readonly struct IotaElements(ILGPU.ArrayView<float> x) : IElementKernel
    {
        public void Element(int e) => x[e] = e;
    }

    [Test]
    public void EveryLaunchPathCountsOneLaunchAndNoSynchronisation()
    {
        using var x = Device.Pool.Rent<float>(5000);
        // Compile first: loading a kernel is not a launch.
        Device.Launch(5000, new IotaThreads(x.View));
        Device.LaunchElements(5000, new IotaElements(x.View));
        var before = Device.Counters.Snapshot();
        Device.Launch(5000, new IotaThreads(x.View));
        Device.LaunchElements(5000, new IotaElements(x.View));
        Device.LaunchElements(new GridStride(7, 3), 5000, new IotaElements(x.View)); // three threads, still one launch
        Device.LaunchElements(0, new IotaElements(x.View));                           // no units: no launch
        var done = Device.Counters.Snapshot() - before;
        Assert.That(done, Is.EqualTo(new DeviceCount(Launches: 3, Clears: 0, Synchronizations: 0)));
        var host = x.ToArray();
        Assert.That(host[4999], Is.EqualTo(4999f), "the launches ran");
    }

    [Test]
    public void AFamilyOperationCountsItsLaunches()
    {
        var elementwise = Device.Kernels<ElementwiseKernels>();
        using var a = Device.Pool.Rent<float>(100);
        using var b = Device.Pool.Rent<float>(100);
        elementwise.Copy(a.View, b.View);
        var before = Device.Counters.Snapshot();
        for (int i = 0; i < 4; i++) elementwise.Copy(a.View, b.View);
        Assert.That((Device.Counters.Snapshot() - before).Launches, Is.EqualTo(4));
    }

    [Test]
    public void ClearsAndHostCopiesAreCounted()
    {
        using var x = Device.Pool.Rent<float>(64);
        var before = Device.Counters.Snapshot();
        x.Clear();
        x.Slice(8, 8).Clear();
        Assert.That(Device.Counters.Snapshot() - before, Is.EqualTo(new DeviceCount(0, 2, 0)), "a clear is a stream operation, not a wait");

        before = Device.Counters.Snapshot();
        x.CopyFrom(new float[64]);            // upload: waits once
        _ = x.ToArray();                      // read-back: once, however many stream waits inside
        x.CopyTo(new float[64]);
        Device.Synchronize();
        Assert.That((Device.Counters.Snapshot() - before).Synchronizations, Is.EqualTo(4));
    }

    [Test]
    public void ASliceIsAWindowOnItsParentAndDisposingItKeepsTheMemory()
    {
        long allocations = Device.Pool.AllocationCount;
        using var x = Device.Pool.Rent<float>(10);
        x.CopyFrom([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        var slice = x.Slice(3, 4);
        Assert.That(slice.ToArray(), Is.EqualTo(new float[] { 3, 4, 5, 6 }));
        slice.CopyFrom([30, 40, 50, 60]);
        var inner = slice.Slice(1, 2);
        Assert.That(inner.Offset, Is.EqualTo(4));
        inner.Clear();
        slice.Dispose();
        Assert.That(x.ToArray(), Is.EqualTo(new float[] { 0, 1, 2, 30, 0, 0, 60, 7, 8, 9 }));
        Assert.That(() => x.Slice(8, 3), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(Device.Pool.AllocationCount - allocations, Is.LessThanOrEqualTo(1), "a slice allocates nothing");
    }

    [Test]
    public void TheProfilerAttributesLaunchesToTheirKernelStructAndFamily()
    {
        using var x = Device.Pool.Rent<float>(1000);
        var elementwise = Device.Kernels<ElementwiseKernels>();
        elementwise.Copy(x.View, x.View);
        var profiler = new LaunchProfiler();
        Device.Profiler = profiler;
        try
        {
            Device.LaunchElements(1000, new IotaElements(x.View));
            Device.LaunchElements(1000, new IotaElements(x.View));
            elementwise.Copy(x.View, x.View);
        }
        finally { Device.Profiler = null; }
        var entries = profiler.Entries;
        Assert.That(entries.Sum(e => e.Launches), Is.EqualTo(3));
        var iota = entries.Single(e => e.Kernel == nameof(IotaElements));
        Assert.That(iota.Launches, Is.EqualTo(2));
        Assert.That(iota.Family, Is.EqualTo(nameof(DeviceCounterTests)), "a struct's family is the type it is nested in");
        Assert.That(entries.Single(e => e.Kernel != nameof(IotaElements)).Family, Is.EqualTo("Elementwise"));
        Assert.That(entries.All(e => e.Milliseconds >= 0));
    }
}
