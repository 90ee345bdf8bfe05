using System.Runtime.InteropServices;
using ILGPU;
using IlgpuDdpm.Diffusion.Distributed;
using IlgpuDdpm.Kernels.Device;
using ILGPU.Runtime;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Distributed;

/// <summary>
/// Issue 10 item 2, CUDA-aware MPI: the staged/direct decision, and both paths of <see cref="GradientExchange"/>
/// on the CPU accelerator against a stand-in second rank. The CPU accelerator's buffers are host memory, so
/// the direct path (the device address handed to MPI) runs here exactly as it would on a CUDA-aware MPI,
/// minus the GPU.
/// </summary>
[TestFixture]
public sealed class GradientExchangeTests
{
    private static ComputeDevice Device => TestDevice.Cpu;

    [TestCase(DeviceKind.Cuda, true, TransferPath.Direct)]
    [TestCase(DeviceKind.Cuda, false, TransferPath.Staged)]
    [TestCase(DeviceKind.Cpu, true, TransferPath.Staged)]
    [TestCase(DeviceKind.Cpu, false, TransferPath.Staged)]
    [TestCase(DeviceKind.OpenCL, true, TransferPath.Staged)]
    public void DirectOnlyForCudaBuffersWithACudaAwareLibrary(DeviceKind device, bool libraryReportsCuda, TransferPath expected) =>
        Assert.That(TransferPaths.Choose(device, libraryReportsCuda), Is.EqualTo(expected));

    [Test]
    public void StartLine_NamesThePathAndWhy()
    {
        Assert.That(TransferPaths.Describe(TransferPath.Direct, DeviceKind.Cuda, true), Does.Contain("direct"));
        Assert.That(TransferPaths.Describe(TransferPath.Staged, DeviceKind.Cuda, false), Does.Contain("staged").And.Contain("no CUDA support"));
        Assert.That(TransferPaths.Describe(TransferPath.Staged, DeviceKind.Cpu, false), Does.Contain("staged").And.Contain("Cpu"));
    }

    [TestCase(TransferPath.Staged)]
    [TestCase(TransferPath.Direct)]
    public void Average_IsTheMeanOverRanks_InOneCall(TransferPath path)
    {
        float[] a = [1, 2, 3, 4, 5], b = [10, 20, 30];
        float[] peer = [7, -2, 0.5f, 8, 1, 4, 6, -30]; // the other rank's a, then b
        using var first = Device.Pool.Rent<float>(a.Length);
        using var second = Device.Pool.Rent<float>(b.Length);
        first.CopyFrom(a);
        second.CopyFrom(b);
        var ranks = new StandInRanks(peer);
        using var exchange = new GradientExchange(Device, ranks, capacity: 10, path);

        float last = exchange.Average([first.View, second.View]);

        float[] mine = [.. a, .. b];
        float[] expected = [.. mine.Select((x, i) => (x + peer[i]) / 2)];
        Assert.That((float[])[.. first.ToArray(), .. second.ToArray()], Is.EqualTo(expected).Within(1e-6f));
        Assert.That(last, Is.EqualTo(expected[^1]));
        Assert.That(ranks.AddressCalls, Is.EqualTo(path == TransferPath.Direct ? 1 : 0), "direct: the device address goes to MPI");
        Assert.That(ranks.SpanCalls, Is.EqualTo(path == TransferPath.Staged ? 1 : 0), "staged: a host buffer goes to MPI");
    }

    [TestCase(TransferPath.Staged)]
    [TestCase(TransferPath.Direct)]
    public void Broadcast_GivesEveryViewTheRootsContents(TransferPath path)
    {
        float[] root = [3, 1, 4, 1, 5, 9];
        using var first = Device.Pool.RentZeroed<float>(2);
        using var second = Device.Pool.RentZeroed<float>(4);
        using var exchange = new GradientExchange(Device, new StandInRanks(root), capacity: 6, path);
        exchange.Broadcast([first.View, second.View]);
        Assert.That((float[])[.. first.ToArray(), .. second.ToArray()], Is.EqualTo(root));
    }

    [Test]
    public void MoreThanTheCapacity_IsRefused()
    {
        using var buffer = Device.Pool.Rent<float>(8);
        using var exchange = new GradientExchange(Device, new StandInRanks(new float[8]), capacity: 4, TransferPath.Staged);
        Assert.Throws<ArgumentException>(() => exchange.Average([buffer.View]));
    }

    /// <summary>
    /// Rank 0 of 2 whose peer holds <paramref name="peer"/>: a sum adds the peer's values, a broadcast from
    /// rank 0 is replaced by them (standing in for the root's). Reads addresses as host memory, as a CUDA-aware
    /// MPI reads device memory.
    /// </summary>
    private sealed class StandInRanks(float[] peer) : ICommunicator
    {
        public int SpanCalls { get; private set; }
        public int AddressCalls { get; private set; }
        public int Rank => 0;
        public int Size => 2;
        public int LocalRank => 0;
        public int LocalSize => 2;
        public string Description => "stand-in for two ranks";
        public bool CudaAware => true;

        public void AllReduceSum(Span<float> values)
        {
            SpanCalls++;
            for (int i = 0; i < values.Length; i++) values[i] += peer[i];
        }

        public void AllReduceSum(nint floats, long count)
        {
            AddressCalls++;
            var values = new float[count];
            Marshal.Copy(floats, values, 0, (int)count);
            for (int i = 0; i < values.Length; i++) values[i] += peer[i];
            Marshal.Copy(values, 0, floats, (int)count);
        }

        public void Broadcast(Span<float> values, int root = 0) => peer.AsSpan(0, values.Length).CopyTo(values);
        public void Broadcast(nint floats, long count, int root = 0) => Marshal.Copy(peer, 0, floats, (int)count);
        public void AllReduceSum(Span<double> values) => throw new NotSupportedException();
        public void AllReduceMax(Span<double> values) => throw new NotSupportedException();
        public void Broadcast(Span<double> values, int root = 0) => throw new NotSupportedException();
        public void Broadcast(Span<byte> values, int root = 0) => throw new NotSupportedException();
        public void Barrier() { }
        public void Abort(int exitCode) => throw new NotSupportedException();
        public void Dispose() { }
    }
}
