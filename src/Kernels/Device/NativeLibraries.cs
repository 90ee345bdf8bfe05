using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;

namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// ILGPU binds the CUDA driver and the OpenCL loader by their bare names ("cuda", "nvcuda", "OpenCL"),
/// which .NET probes as <c>libcuda.so</c> / <c>libOpenCL.so</c>. Linux systems without development
/// packages ship only the versioned sonames (<c>libcuda.so.1</c>, <c>libOpenCL.so.1</c>), so without
/// this resolver a machine with a working GPU reports "no CUDA device".
/// </summary>
public static class NativeLibraries
{
    private static int registered;

    /// <summary>Registers the resolver once per process; later calls do nothing.</summary>
    public static void Register()
    {
        if (Interlocked.Exchange(ref registered, 1) != 0) return;
        NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        string[] candidates = name.ToLowerInvariant() switch
        {
            "cuda" or "nvcuda" or "libcuda" or "libcuda.so" => ["libcuda.so.1", "libcuda.so"],
            "opencl" or "libopencl" or "libopencl.so" => ["libOpenCL.so.1", "libOpenCL.so"],
            _ => [],
        };
        foreach (var candidate in candidates)
            if (NativeLibrary.TryLoad(candidate, assembly, searchPath, out var handle))
                return handle;
        return IntPtr.Zero; // fall back to the runtime's own probing
    }
}
