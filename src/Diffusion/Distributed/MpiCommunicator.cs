using System.Runtime.InteropServices;
using System.Text;

namespace IlgpuDdpm.Diffusion.Distributed;

/// <summary>
/// A thin binding to Open MPI's C API (libmpi.so.40, Open MPI 4.x and 5.x), resolved at run time so a plain
/// process never needs the library. The library is opened with <c>dlopen(RTLD_NOW | RTLD_GLOBAL)</c>: Open
/// MPI loads its components (mca_*.so) as plugins that expect libmpi's symbols to be global, which .NET's
/// own loader (RTLD_LOCAL) does not give. Open MPI's handles are addresses of exported objects:
/// <c>MPI_COMM_WORLD</c> = &amp;ompi_mpi_comm_world, <c>MPI_FLOAT</c> = &amp;ompi_mpi_float, <c>MPI_SUM</c> =
/// &amp;ompi_mpi_op_sum, and <c>MPI_IN_PLACE</c> is <c>(void*)1</c> (mpi.h). Buffers are host memory, or CUDA
/// device memory when <see cref="CudaAware"/> (what <c>MPIX_Query_cuda_support</c> says; <see cref="TransferPaths"/>
/// decides, docs/distributed.md).
/// MPI runs in MPI_THREAD_FUNNELED mode: only the thread that initialised it calls it.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    /// <summary>The soname of Open MPI's library (ABI 40 since Open MPI 3.0).</summary>
    public const string LibraryName = "libmpi.so.40";

    private const int ThreadFunneled = 1;   // MPI_THREAD_FUNNELED in Open MPI's mpi.h
    private const int Success = 0;          // MPI_SUCCESS
    private static readonly nint InPlace = 1; // MPI_IN_PLACE: ((void *) 1) in Open MPI's mpi.h
    private const int RtldNow = 2, RtldGlobal = 0x100;

    private readonly nint library;
    private readonly nint commWorld, mpiFloat, mpiDouble, mpiByte, opSum, opMax;
    private readonly delegate* unmanaged<nint, nint, int, nint, nint, nint, int> allreduce;
    private readonly delegate* unmanaged<nint, int, nint, int, nint, int> bcast;
    private readonly delegate* unmanaged<nint, int> barrier;
    private readonly delegate* unmanaged<nint, int, int> abort;
    private readonly delegate* unmanaged<int> finalize;
    private bool finalized;

    private MpiCommunicator(nint library, string launchVariable, int localRank, int? localSize)
    {
        this.library = library;
        var init = (delegate* unmanaged<int*, nint, int, int*, int>)Export("MPI_Init_thread");
        var commRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank");
        var commSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size");
        var version = (delegate* unmanaged<byte*, int*, int>)Export("MPI_Get_library_version");
        allreduce = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Export("MPI_Allreduce");
        bcast = (delegate* unmanaged<nint, int, nint, int, nint, int>)Export("MPI_Bcast");
        barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier");
        abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort");
        finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        commWorld = Export("ompi_mpi_comm_world");
        mpiFloat = Export("ompi_mpi_float");
        mpiDouble = Export("ompi_mpi_double");
        mpiByte = Export("ompi_mpi_byte");
        opSum = Export("ompi_mpi_op_sum");
        opMax = Export("ompi_mpi_op_max");

        int provided;
        int argc = 0;
        Check(init(&argc, 0, ThreadFunneled, &provided), "MPI_Init_thread");
        if (provided < ThreadFunneled)
            throw new DistributedError($"{LibraryName}: MPI_Init_thread gives thread level {provided}; ddpm needs MPI_THREAD_FUNNELED (1)");
        int rank, size;
        Check(commRank(commWorld, &rank), "MPI_Comm_rank");
        Check(commSize(commWorld, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        LocalRank = localRank;
        LocalSize = localSize is > 0 ? localSize.Value : size;

        var text = new byte[4096]; // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI; generous anyway
        int length;
        fixed (byte* p = text) Check(version(p, &length), "MPI_Get_library_version");
        LibraryVersion = Encoding.ASCII.GetString(text, 0, Math.Clamp(length, 0, text.Length)).Split('\n')[0].Trim().TrimEnd('\0', ',');
        if (Export("MPIX_Query_cuda_support", required: false) is var query and not 0)
            CudaAware = ((delegate* unmanaged<int>)query)() != 0;
        LaunchVariable = launchVariable;
    }

    public int Rank { get; }
    public int Size { get; }
    public int LocalRank { get; }
    public int LocalSize { get; }

    /// <summary>The first line of MPI_Get_library_version, e.g. "Open MPI v4.1.4, package: Debian OpenMPI".</summary>
    public string LibraryVersion { get; }

    /// <summary>Whether the library was built with CUDA support and reports it at run time (MPIX_Query_cuda_support).</summary>
    public bool CudaAware { get; }

    /// <summary>The environment variable that showed the launch.</summary>
    public string LaunchVariable { get; }

    public string Description =>
        $"{LibraryVersion.Split(',')[0]}, rank {Rank} of {Size} (local {LocalRank} of {LocalSize}), " +
        (CudaAware ? "CUDA-aware (MPIX_Query_cuda_support = 1)" : "no CUDA support");

    /// <summary>
    /// Loads Open MPI and calls MPI_Init_thread. A missing or foreign library is a <see cref="DistributedError"/>
    /// naming what was found.
    /// </summary>
    public static MpiCommunicator Initialize(string launchVariable, int localRank, int? localSize)
    {
        nint handle;
        fixed (byte* name = Encoding.ASCII.GetBytes(LibraryName + "\0")) handle = dlopen(name, RtldNow | RtldGlobal);
        if (handle == 0)
        {
            string found = NativeLibrary.TryLoad("libmpi.so.12", out var mpich) ? "; libmpi.so.12 (MPICH, Intel MPI or MVAPICH) is present, but its ABI is not supported" : "";
            if (mpich != 0) NativeLibrary.Free(mpich);
            throw new DistributedError($"{launchVariable} is set (an Open MPI launch) but {LibraryName} could not be loaded ({DlError()}){found}; " +
                                       "install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev)");
        }
        var communicator = new MpiCommunicator(handle, launchVariable, localRank, localSize);
        if (!communicator.LibraryVersion.StartsWith("Open MPI", StringComparison.Ordinal))
        {
            string found = communicator.LibraryVersion;
            communicator.Dispose();
            throw new DistributedError($"{LibraryName} is '{found}', not Open MPI; ddpm supports Open MPI's ABI only");
        }
        return communicator;
    }

    public void AllReduceSum(Span<float> values) => AllReduce(values, mpiFloat, opSum);
    public void AllReduceSum(Span<double> values) => AllReduce(values, mpiDouble, opSum);
    public void AllReduceMax(Span<double> values) => AllReduce(values, mpiDouble, opMax);
    public void Broadcast(Span<float> values, int root = 0) => Bcast(values, mpiFloat, root);
    public void Broadcast(Span<double> values, int root = 0) => Bcast(values, mpiDouble, root);
    public void Broadcast(Span<byte> values, int root = 0) => Bcast(values, mpiByte, root);

    public void AllReduceSum(nint floats, long count) => AllReduce(floats, count, mpiFloat, opSum);
    public void Broadcast(nint floats, long count, int root = 0) => Bcast(floats, count, mpiFloat, root);

    public void Barrier() => Check(barrier(commWorld), "MPI_Barrier");

    public void Abort(int exitCode) => abort(commWorld, exitCode);

    /// <summary>MPI_Finalize (once). The library stays loaded: Open MPI cannot be initialised twice in a process.</summary>
    public void Dispose()
    {
        if (finalized) return;
        finalized = true;
        finalize();
    }

    private void AllReduce<T>(Span<T> values, nint type, nint op) where T : unmanaged
    {
        fixed (T* p = values) AllReduce((nint)p, values.Length, type, op, sizeof(T));
    }

    private void Bcast<T>(Span<T> values, nint type, int root) where T : unmanaged
    {
        fixed (T* p = values) Bcast((nint)p, values.Length, type, root, sizeof(T));
    }

    // MPI counts are int: a buffer longer than 2³¹−1 elements goes in pieces. The address may be a device one
    // (CUDA-aware library): it is only offset here, never read.
    private void AllReduce(nint address, long length, nint type, nint op, int elementSize = sizeof(float))
    {
        for (long start = 0; start < length; start += int.MaxValue)
        {
            int count = (int)Math.Min(int.MaxValue, length - start);
            Check(allreduce(InPlace, address + (nint)(start * elementSize), count, type, op, commWorld), "MPI_Allreduce");
        }
    }

    private void Bcast(nint address, long length, nint type, int root, int elementSize = sizeof(float))
    {
        if (root < 0 || root >= Size) throw new ArgumentOutOfRangeException(nameof(root), $"root rank {root}; expected 0..{Size - 1}");
        for (long start = 0; start < length; start += int.MaxValue)
            Check(bcast(address + (nint)(start * elementSize), (int)Math.Min(int.MaxValue, length - start), type, root, commWorld), "MPI_Bcast");
    }

    private nint Export(string name, bool required = true)
    {
        if (NativeLibrary.TryGetExport(library, name, out var address)) return address;
        if (!required) return 0;
        throw new DistributedError($"{LibraryName} has no symbol {name}: it is not Open MPI's library");
    }

    // Open MPI's default error handler (MPI_ERRORS_ARE_FATAL) aborts the job before a call returns an error;
    // this catches a library configured otherwise.
    private void Check(int code, string call)
    {
        if (code != Success) throw new DistributedError($"{call} failed with MPI error {code} on rank {Rank}");
    }

    private static string DlError()
    {
        var message = dlerror();
        return message == 0 ? "not found" : Marshal.PtrToStringUTF8(message) ?? "not found";
    }

    [DllImport("libc.so.6", EntryPoint = "dlopen")]
    private static extern nint dlopen(byte* file, int mode);

    [DllImport("libc.so.6", EntryPoint = "dlerror")]
    private static extern nint dlerror();
}
