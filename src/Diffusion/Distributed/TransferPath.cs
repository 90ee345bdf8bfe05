using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Diffusion.Distributed;

/// <summary>How the gradients and the start-up state travel between ranks (docs/distributed.md, "CUDA-aware MPI").</summary>
public enum TransferPath
{
    /// <summary>Device → host copy, MPI on the host buffer, host → device copy: works with every Open MPI build.</summary>
    Staged,

    /// <summary>The device buffer's address goes to MPI itself: a CUDA-aware Open MPI reads and writes GPU memory (NVLink, GPUDirect).</summary>
    Direct,
}

/// <summary>The one decision between <see cref="TransferPath.Staged"/> and <see cref="TransferPath.Direct"/>.</summary>
public static class TransferPaths
{
    /// <summary>
    /// Direct only when the buffers are CUDA memory AND the MPI library reports CUDA support
    /// (<c>MPIX_Query_cuda_support()</c>, Open MPI's run-time answer; <c>ompi_info</c> shows the build's as
    /// <c>mpi_built_with_cuda_support</c>). A library without CUDA support would read a device address as host
    /// memory and crash; OpenCL buffers are no address MPI understands; the CPU accelerator's buffers are host
    /// memory already, and stay on the staged path everywhere so the CPU path is the one the tests run.
    /// </summary>
    public static TransferPath Choose(DeviceKind device, bool libraryReportsCuda) =>
        device == DeviceKind.Cuda && libraryReportsCuda ? TransferPath.Direct : TransferPath.Staged;

    /// <summary>The start-up line rank 0 prints: the path and why it was chosen.</summary>
    public static string Describe(TransferPath path, DeviceKind device, bool libraryReportsCuda) => path switch
    {
        TransferPath.Direct => "gradient transfers: direct, device buffers handed to MPI (the library reports CUDA support)",
        _ when device == DeviceKind.Cuda => "gradient transfers: staged through host memory (the MPI library reports no CUDA support)",
        _ => $"gradient transfers: staged through host memory ({device} device{(libraryReportsCuda ? "; CUDA-aware MPI is used only for CUDA buffers" : "")})",
    };
}
