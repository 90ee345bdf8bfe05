namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// A family of kernels (Conv, Norm, …): the kernel structs and the checked wrapper methods that launch them
/// through <see cref="ComputeDevice.Launch{TKernel}(int, in TKernel)"/> (which loads and caches each kernel).
/// <see cref="ComputeDevice.Kernels{T}"/> creates each family on first use and caches it.
/// </summary>
public interface IKernelFamily<TSelf> where TSelf : class, IKernelFamily<TSelf>
{
    /// <summary>The family on <paramref name="device"/> (its kernels load on their first launch).</summary>
    static abstract TSelf Create(ComputeDevice device);
}
