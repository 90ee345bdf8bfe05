namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// A family of kernels (Conv, Norm, …) loaded once per device and kept as typed delegates.
/// <see cref="ComputeDevice.Kernels{T}"/> creates each family on first use and caches it.
/// </summary>
public interface IKernelFamily<TSelf> where TSelf : class, IKernelFamily<TSelf>
{
    /// <summary>Compiles (loads) every kernel of the family on <paramref name="device"/>.</summary>
    static abstract TSelf Create(ComputeDevice device);
}
