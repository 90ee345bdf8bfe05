using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;

namespace IlgpuDdpm.Diffusion.Distributed;

/// <summary>
/// Moves a list of float device buffers across the ranks as ONE flat buffer, so a step makes one MPI call
/// however many parameters there are (issue 10: "one flat buffer, never one call per parameter").
/// <see cref="TransferPath.Staged"/>: device → host copies into a host array, MPI on it, host → device copies.
/// <see cref="TransferPath.Direct"/> (CUDA-aware MPI): device → device copies into one pooled device buffer whose
/// address goes to MPI, the 1/N scaling on the device, device → device copies back; nothing crosses PCIe but
/// the 4-byte loss. The caller picks the path with <see cref="TransferPaths.Choose"/>.
/// </summary>
public sealed class GradientExchange : IDisposable
{
    private readonly ComputeDevice device;
    private readonly ICommunicator ranks;
    private readonly float[] hostStage = [];
    private readonly DeviceBuffer<float>? deviceStage;
    private readonly Stopwatch clock = new();

    /// <summary>An exchange for lists of at most <paramref name="capacity"/> floats in all.</summary>
    public GradientExchange(ComputeDevice device, ICommunicator ranks, int capacity, TransferPath path)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        this.device = device;
        this.ranks = ranks;
        Path = path;
        if (path == TransferPath.Direct) deviceStage = device.Pool.Rent<float>(capacity);
        else hostStage = new float[capacity];
    }

    /// <summary>Staged or direct.</summary>
    public TransferPath Path { get; }

    /// <summary>Time spent in <see cref="Average"/> over all calls: copies, MPI (including waiting for the slowest rank), scaling.</summary>
    public TimeSpan Time => clock.Elapsed;

    /// <summary>
    /// Replaces every element of <paramref name="views"/> by its mean over the ranks (sum / N: each rank's
    /// gradient is that of its shard's mean loss, so the mean is the gradient of the whole batch's mean loss)
    /// and returns the new value of the last element of the last view (the trainer puts the loss there).
    /// </summary>
    public float Average(IReadOnlyList<ArrayView<float>> views)
    {
        clock.Start();
        try
        {
            float inverse = 1f / ranks.Size;
            int length = Gather(views);
            if (deviceStage is { } flat)
            {
                var used = flat.View.SubView(0, length);
                ranks.AllReduceSum(used.LoadEffectiveAddressAsPtr(), length);
                device.Kernels<ElementwiseKernels>().Scale(used, used, inverse);
                Scatter(views);
                var last = new float[1];
                ((ArrayView1D<float, Stride1D.Dense>)used.SubView(length - 1, 1)).CopyToCPU(device.Stream, last);
                device.Stream.Synchronize();
                return last[0];
            }
            var stage = hostStage.AsSpan(0, length);
            ranks.AllReduceSum(stage);
            for (int i = 0; i < stage.Length; i++) stage[i] *= inverse;
            Scatter(views);
            return stage[^1];
        }
        finally
        {
            clock.Stop();
        }
    }

    /// <summary>Copies rank <paramref name="root"/>'s contents of <paramref name="views"/> into every rank's (one MPI_Bcast).</summary>
    public void Broadcast(IReadOnlyList<ArrayView<float>> views, int root = 0)
    {
        int length = Gather(views);
        if (deviceStage is { } flat) ranks.Broadcast(flat.View.SubView(0, length).LoadEffectiveAddressAsPtr(), length, root);
        else ranks.Broadcast(hostStage.AsSpan(0, length), root);
        Scatter(views);
    }

    /// <summary>The views, in order, into the stage; returns after the copies are done (MPI reads the stage next).</summary>
    private int Gather(IReadOnlyList<ArrayView<float>> views)
    {
        var stream = device.Stream;
        stream.Synchronize();
        int offset = 0;
        foreach (var view in views)
        {
            int length = checked((int)view.Length);
            if (offset + length > Capacity)
                throw new ArgumentException($"the buffers hold more than the exchange's {Capacity} floats", nameof(views));
            if (deviceStage is { } flat) view.CopyTo(stream, flat.View.SubView(offset, length));
            else Dense(view).CopyToCPU(stream, hostStage.AsSpan(offset, length));
            offset += length;
        }
        stream.Synchronize();
        return offset;
    }

    /// <summary>The stage back into the views, in order.</summary>
    private void Scatter(IReadOnlyList<ArrayView<float>> views)
    {
        var stream = device.Stream;
        int offset = 0;
        foreach (var view in views)
        {
            int length = (int)view.Length;
            if (deviceStage is { } flat) flat.View.SubView(offset, length).CopyTo(stream, view);
            else Dense(view).CopyFromCPU(stream, hostStage.AsSpan(offset, length));
            offset += length;
        }
        stream.Synchronize();
    }

    private int Capacity => deviceStage is { } flat ? (int)flat.View.Length : hostStage.Length;

    private static ArrayView1D<float, Stride1D.Dense> Dense(ArrayView<float> view) => view;

    /// <summary>Returns the device stage to the pool.</summary>
    public void Dispose() => deviceStage?.Dispose();
}
