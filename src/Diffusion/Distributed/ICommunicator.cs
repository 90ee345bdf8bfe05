namespace IlgpuDdpm.Diffusion.Distributed;

/// <summary>
/// The collective operations data-parallel training needs (DESIGN.md §1, docs/distributed.md): every rank
/// calls each operation in the same order with buffers of the same length. Rank 0 is the one that reads and
/// writes the run folder. <see cref="SingleProcess"/> is the communicator of a plain run (size 1, every
/// operation a no-op); <see cref="MpiCommunicator"/> wraps Open MPI's C API.
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's index in 0..Size−1.</summary>
    int Rank { get; }

    /// <summary>Number of processes taking part.</summary>
    int Size { get; }

    /// <summary>This process's index among the ranks on its own machine (chooses the GPU).</summary>
    int LocalRank { get; }

    /// <summary>Number of ranks on this process's machine (shares the CPU cores).</summary>
    int LocalSize { get; }

    /// <summary>True for rank 0, the only rank that writes files and prints progress.</summary>
    bool IsRoot => Rank == 0;

    /// <summary>A short description for the log, e.g. "Open MPI v4.1.4, 2 ranks".</summary>
    string Description { get; }

    /// <summary>Replaces every element by its sum over all ranks (in place).</summary>
    void AllReduceSum(Span<float> values);

    /// <summary>Replaces every element by its sum over all ranks (in place).</summary>
    void AllReduceSum(Span<double> values);

    /// <summary>Replaces every element by its maximum over all ranks (in place).</summary>
    void AllReduceMax(Span<double> values);

    /// <summary>Copies rank <paramref name="root"/>'s <paramref name="values"/> into every rank's.</summary>
    void Broadcast(Span<float> values, int root = 0);

    /// <summary>
    /// Whether the library takes CUDA device addresses in <see cref="AllReduceSum(nint, long)"/> and
    /// <see cref="Broadcast(nint, long, int)"/> (a CUDA-aware Open MPI, <c>MPIX_Query_cuda_support</c>).
    /// </summary>
    bool CudaAware { get; }

    /// <summary>
    /// <see cref="AllReduceSum(Span{float})"/> on <paramref name="count"/> floats at <paramref name="floats"/>:
    /// host memory, or CUDA device memory when <see cref="CudaAware"/>. The caller has finished every write to it.
    /// </summary>
    void AllReduceSum(nint floats, long count);

    /// <summary><see cref="Broadcast(Span{float}, int)"/> on <paramref name="count"/> floats at <paramref name="floats"/> (host, or device when <see cref="CudaAware"/>).</summary>
    void Broadcast(nint floats, long count, int root = 0);

    /// <summary>Copies rank <paramref name="root"/>'s <paramref name="values"/> into every rank's.</summary>
    void Broadcast(Span<double> values, int root = 0);

    /// <summary>Copies rank <paramref name="root"/>'s <paramref name="values"/> into every rank's.</summary>
    void Broadcast(Span<byte> values, int root = 0);

    /// <summary>Returns when every rank has called it.</summary>
    void Barrier();

    /// <summary>Ends every rank of the job with <paramref name="exitCode"/> (a rank that cannot go on alone).</summary>
    void Abort(int exitCode);
}

/// <summary>The communicator of a plain single-process run: rank 0 of 1, every collective leaves the data as it is.</summary>
public sealed class SingleProcess : ICommunicator
{
    /// <summary>The one instance.</summary>
    public static readonly SingleProcess Instance = new();

    private SingleProcess() { }

    public int Rank => 0;
    public int Size => 1;
    public int LocalRank => 0;
    public int LocalSize => 1;
    public string Description => "single process";
    public bool CudaAware => false;
    public void AllReduceSum(nint floats, long count) { }
    public void Broadcast(nint floats, long count, int root = 0) => CheckRoot(root);
    public void AllReduceSum(Span<float> values) { }
    public void AllReduceSum(Span<double> values) { }
    public void AllReduceMax(Span<double> values) { }
    public void Broadcast(Span<float> values, int root = 0) => CheckRoot(root);
    public void Broadcast(Span<double> values, int root = 0) => CheckRoot(root);
    public void Broadcast(Span<byte> values, int root = 0) => CheckRoot(root);
    public void Barrier() { }
    public void Abort(int exitCode) => Environment.Exit(exitCode);
    public void Dispose() { }

    private static void CheckRoot(int root)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), $"root rank {root} of a single process; expected 0");
    }
}
