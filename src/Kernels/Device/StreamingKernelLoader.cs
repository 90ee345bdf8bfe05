using ILGPU;
using ILGPU.Runtime;

namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// LEGACY, kept only while Conv, Matmul and Attention still load method kernels; new kernels are structs
/// launched through <see cref="ComputeDevice.Launch{TKernel}(int, in TKernel)"/>, whose
/// <see cref="KernelCache"/> applies the same grouping rule. Delete this file when nothing calls it.
/// Loads an implicitly grouped (one-thread-per-index) kernel the way each accelerator runs it fastest.
/// On a GPU ILGPU picks the group size (auto-grouping). On ILGPU's CPU accelerator every group is a set
/// of OS threads meeting at barriers, so a launch of auto-sized groups costs milliseconds before any
/// work is done; groups of ONE thread cost a few hundred microseconds (measured: 0.26 ms vs 5.7 ms for an
/// empty launch, and the convolution ran 3–4× faster). The kernels themselves are unchanged: the same
/// method, the same index space, only the grouping differs. Every family loads its implicitly grouped
/// kernels through these overloads.
/// </summary>
public static class StreamingKernelLoader
{
    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1> LoadStreamingKernel<T1>(this ComputeDevice device, Action<Index1D, T1> kernel)
        where T1 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2> LoadStreamingKernel<T1, T2>(this ComputeDevice device, Action<Index1D, T1, T2> kernel)
        where T1 : struct where T2 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3> LoadStreamingKernel<T1, T2, T3>(this ComputeDevice device, Action<Index1D, T1, T2, T3> kernel)
        where T1 : struct where T2 : struct where T3 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4> LoadStreamingKernel<T1, T2, T3, T4>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5> LoadStreamingKernel<T1, T2, T3, T4, T5>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6> LoadStreamingKernel<T1, T2, T3, T4, T5, T6>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7, T8> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7, T8>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);

    /// <summary>Loads <paramref name="kernel"/>: one thread per group on the CPU accelerator, auto-grouped elsewhere.</summary>
    public static Action<AcceleratorStream, Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> LoadStreamingKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13>(this ComputeDevice device, Action<Index1D, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct where T13 : struct =>
        device.IsCpu ? device.Accelerator.LoadImplicitlyGroupedKernel(kernel, 1) : device.Accelerator.LoadAutoGroupedKernel(kernel);
}
