using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace IlgpuDdpm.Kernels.Device;

/// <summary>Which kind of accelerator runs the kernels.</summary>
public enum DeviceKind { Cpu, Cuda, OpenCL }

/// <summary>One accelerator ILGPU can see, as listed by <c>ddpm devices</c>.</summary>
public sealed record DeviceInfo(DeviceKind Kind, string Name, long MemoryBytes, int ComputeUnits, int MaxThreadsPerGroup, int WarpSize);

/// <summary>
/// The accelerator every kernel runs on: an ILGPU context and accelerator, the one stream all work is
/// ordered on, the buffer pool, and the kernel families loaded on it. Choose it with
/// <see cref="Open"/> (<c>auto</c> = CUDA, then OpenCL, then CPU; or <c>cuda</c> / <c>opencl</c> /
/// <c>cpu</c>; the environment variable <c>DDPM_DEVICE</c> when no name is given).
/// </summary>
public sealed class ComputeDevice : IDisposable
{
    /// <summary>The environment variable that names the device when no option does.</summary>
    public const string EnvironmentVariable = "DDPM_DEVICE";

    /// <summary>
    /// Threads per group the CPU accelerator must offer: the explicitly grouped kernels use up to
    /// 256 (16×16 tiles). ILGPU's default CPU device allows only 16.
    /// </summary>
    public const int CpuThreadsPerGroup = 256;

    private readonly ConcurrentDictionary<Type, object> families = new();
    private readonly KernelCache kernels;

    private ComputeDevice(Context context, Accelerator accelerator, DeviceKind kind, IReadOnlyList<string> report)
    {
        Context = context;
        Accelerator = accelerator;
        Kind = kind;
        SelectionReport = report;
        Stream = accelerator.DefaultStream;
        Counters = new DeviceCounters();
        Pool = new BufferPool(accelerator, Stream, Counters);
        kernels = new KernelCache(accelerator, IsCpu);
        ElementShape = GridStride.For(this);
    }

    /// <summary>The ILGPU context (one per device, so its settings are this device's).</summary>
    public Context Context { get; }

    /// <summary>The ILGPU accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>CPU, CUDA or OpenCL.</summary>
    public DeviceKind Kind { get; }

    /// <summary>True on ILGPU's CPU accelerator, where barrier-free kernel variants are preferred.</summary>
    public bool IsCpu => Kind == DeviceKind.Cpu;

    /// <summary>
    /// Makes the CPU accelerator choose, wherever a family's variant is <c>Auto</c>, the kernels a GPU runs (the tiled
    /// GEMM, the group-tree reductions) instead of its own barrier-free ones. Slow here; it exists so that the launches a
    /// GPU issues can be counted without one (<c>ddpm summary --batch</c>). No effect on a GPU.
    /// </summary>
    public bool ChooseGpuVariants { get; set; }

    /// <summary>Whether <c>Auto</c> variants resolve to the GPU kernels: off the CPU, or with <see cref="ChooseGpuVariants"/> set.</summary>
    public bool UsesGpuVariants => !IsCpu || ChooseGpuVariants;

    /// <summary>The multiprocessors an H200 has: what the CPU accelerator sizes GPU launches for under <see cref="ChooseGpuVariants"/>.</summary>
    public const int CountedGpuMultiprocessors = 132;

    /// <summary>
    /// The multiprocessors (SMs) a launch is sized for — how many splits a long reduction gets, for instance: the
    /// accelerator's, or <see cref="CountedGpuMultiprocessors"/> on the CPU with <see cref="ChooseGpuVariants"/>, so that
    /// the launches counted there are an H200's and not those of a 2-SM GPU.
    /// </summary>
    public int Multiprocessors => IsCpu && ChooseGpuVariants ? CountedGpuMultiprocessors : Math.Max(1, Accelerator.NumMultiprocessors);

    /// <summary>
    /// While set, every launch is counted (and attributed to the <see cref="Profiler"/>, at 0 ms) but neither compiled nor
    /// run; clears, copies and waits still happen. The host decides alone which kernels a step launches, how many and in
    /// what order, so the counts are those of a real run (a test holds them equal) while the data are left meaningless:
    /// <c>ddpm summary --batch</c> counts the launches of any preset and batch this way in moments, with the GPU's
    /// variants on the CPU (<see cref="ChooseGpuVariants"/>) where running them would take many minutes.
    /// </summary>
    public bool CountsOnly { get; set; }

    /// <summary>The stream every kernel and copy is ordered on.</summary>
    public AcceleratorStream Stream { get; }

    /// <summary>Every tensor's memory comes from here.</summary>
    public BufferPool Pool { get; }

    /// <summary>Lines saying which device was chosen and why the others were not.</summary>
    public IReadOnlyList<string> SelectionReport { get; }

    /// <summary>Short description, e.g. "Cuda: NVIDIA H200 (139.8 GiB, 132 compute units)"; the CPU accelerator reports cores (its memory is the host's).</summary>
    public string Description => IsCpu
        ? $"{Kind}: ILGPU CPU accelerator ({Accelerator.NumMultiprocessors} cores, {GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1024.0 * 1024 * 1024):F1} GiB host memory)"
        : $"{Kind}: {Accelerator.Name} ({Accelerator.MemorySize / (1024.0 * 1024 * 1024):F1} GiB, {Accelerator.NumMultiprocessors} compute units)";

    /// <summary>
    /// What this device has done so far: kernel launches, buffer clears and host–device synchronisations
    /// (issue 9: a GPU step's cost is counted in launches and synchronisations). Read a difference around the
    /// work of interest; nothing is ever reset.
    /// </summary>
    public DeviceCounters Counters { get; }

    /// <summary>
    /// When set, every launch is timed and attributed to its kernel struct (<c>ddpm train --profile</c>): the
    /// stream is synchronised before and after each launch, so a profiled step runs slower than a plain one.
    /// Null (the default) costs one field test per launch.
    /// </summary>
    public LaunchProfiler? Profiler { get; set; }

    /// <summary>The kernel family <typeparamref name="T"/>, compiled on first use and cached.</summary>
    public T Kernels<T>() where T : class, IKernelFamily<T> =>
        (T)families.GetOrAdd(typeof(T), _ => T.Create(this));

    /// <summary>How <see cref="LaunchElements{TElement}(int, in TElement)"/> sizes its grid-stride launches here.</summary>
    public GridStride ElementShape { get; }

    /// <summary>
    /// THE launch path of every kernel. <paramref name="kernel"/> is a struct holding the kernel's arguments;
    /// its compiled form is loaded on the first launch of that struct type on this device and cached (see
    /// <see cref="KernelCache"/>, which alone decides the grouping). A family's wrapper is then one typed line,
    /// e.g. <c>device.Launch(rows, new RowStats(x, mean, rstd, m, eps))</c>; nothing is boxed.
    /// Runs <paramref name="threads"/> threads of an <see cref="IThreadKernel"/>, ordered on <see cref="Stream"/>.
    /// </summary>
    public void Launch<TKernel>(int threads, in TKernel kernel) where TKernel : struct, IThreadKernel
    {
        if (!Counted<TKernel>()) Run(kernels.Threads<TKernel>(), (Index1D)threads, kernel);
    }

    /// <summary>Runs an explicitly grouped <see cref="IGroupKernel"/> with the grid and group of <paramref name="config"/>.</summary>
    public void Launch<TKernel>(KernelConfig config, in TKernel kernel) where TKernel : struct, IGroupKernel
    {
        if (!Counted<TKernel>()) Run(kernels.Groups<TKernel>(), config, kernel);
    }

    // Counts a launch; true when that is all it does (CountsOnly), so the kernel is neither loaded nor run.
    private bool Counted<TKernel>()
    {
        Counters.CountLaunch();
        if (!CountsOnly) return false;
        Profiler?.CountOnly(typeof(TKernel));
        return true;
    }

    // Both launch forms: run the kernel, timed when a profiler is set (typed all the way: nothing boxed).
    private void Run<TShape, TKernel>(Action<AcceleratorStream, TShape, TKernel> launch, TShape shape, in TKernel kernel)
        where TShape : struct where TKernel : struct
    {
        if (Profiler is { } profiler)
        {
            long start = profiler.Begin(this);
            launch(Stream, shape, kernel);
            profiler.End(this, typeof(TKernel), start);
        }
        else launch(Stream, shape, kernel);
    }

    /// <summary>
    /// Runs <paramref name="element"/> over units 0 … <paramref name="units"/> − 1 as a grid-stride loop
    /// (<see cref="GridStrideKernel{TElement}"/>) with the thread count <paramref name="shape"/> gives; no launch for 0 units.
    /// </summary>
    public void LaunchElements<TElement>(GridStride shape, int units, in TElement element) where TElement : struct, IElementKernel
    {
        if (units <= 0) return;
        int threads = shape.Threads(units);
        int block = IsCpu ? units / threads + (units % threads != 0 ? 1 : 0) : 1; // see GridStrideKernel
        Launch(threads, new GridStrideKernel<TElement>(element, units, threads, block));
    }

    /// <summary><see cref="LaunchElements{TElement}(GridStride, int, in TElement)"/> with this device's <see cref="ElementShape"/>.</summary>
    public void LaunchElements<TElement>(int units, in TElement element) where TElement : struct, IElementKernel =>
        LaunchElements(ElementShape, units, element);

    /// <summary>Waits until all queued work is done (counted in <see cref="DeviceCounters.Synchronizations"/>).</summary>
    public void Synchronize()
    {
        Counters.CountSynchronization();
        Stream.Synchronize();
    }

    /// <summary>
    /// Opens the device named by <paramref name="choice"/> (<c>auto</c>, <c>cuda</c>, <c>opencl</c>,
    /// <c>cpu</c>); null or empty means <c>DDPM_DEVICE</c>, else <c>auto</c>.
    /// Throws <see cref="DeviceUnavailableException"/> with a one-line reason when the named kind is absent.
    /// </summary>
    public static ComputeDevice Open(string? choice = null) => Open(choice, 0, 0);

    /// <summary>
    /// <see cref="Open(string?)"/> for one of several processes sharing a machine (data-parallel training):
    /// CUDA device <paramref name="cudaOrdinal"/> (the process's node-local rank, modulo the devices present),
    /// and a CPU accelerator of <paramref name="cpuCores"/> multiprocessors (0: one per core).
    /// </summary>
    public static ComputeDevice Open(string? choice, int cudaOrdinal, int cpuCores)
    {
        if (string.IsNullOrWhiteSpace(choice)) choice = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (string.IsNullOrWhiteSpace(choice)) choice = "auto";
        var wanted = choice.Trim().ToLowerInvariant();
        if (wanted is not ("auto" or "cuda" or "opencl" or "cpu"))
            throw new DeviceUnavailableException($"unknown device '{choice}': expected auto, cuda, opencl or cpu");

        NativeLibraries.Register();
        var context = CreateContext(cpuCores);
        var report = new List<string>();
        try
        {
            var cuda = context.GetCudaDevices();
            var opencl = context.GetCLDevices();
            Accelerator? accelerator = null;
            DeviceKind kind = DeviceKind.Cpu;

            if (wanted is "auto" or "cuda")
            {
                if (cuda.Count > 0)
                {
                    int ordinal = cudaOrdinal % cuda.Count;
                    accelerator = cuda[ordinal].CreateAccelerator(context);
                    kind = DeviceKind.Cuda;
                    report.Add($"chose CUDA device {ordinal}: {cuda[ordinal].Name}" + (cuda.Count > 1 ? $" (of {cuda.Count})" : ""));
                }
                else report.Add("CUDA: no device (libcuda.so.1 not found or no NVIDIA GPU visible)");
            }
            if (accelerator is null && wanted is "auto" or "opencl")
            {
                if (opencl.Count > 0)
                {
                    accelerator = opencl[0].CreateAccelerator(context);
                    kind = DeviceKind.OpenCL;
                    report.Add($"chose OpenCL device 0: {opencl[0].Name}");
                }
                else report.Add("OpenCL: no device ILGPU supports (it needs libOpenCL.so.1 and an OpenCL 2.0 device with the generic address space)");
            }
            if (accelerator is null && wanted is "auto" or "cpu")
            {
                accelerator = context.GetCPUDevice(0).CreateAccelerator(context);
                kind = DeviceKind.Cpu;
                report.Add($"chose the CPU accelerator ({(cpuCores > 0 ? cpuCores : Environment.ProcessorCount)} cores; kernels run as .NET threads, far slower than a GPU)");
            }
            if (accelerator is null)
                throw new DeviceUnavailableException($"device '{wanted}' requested but unavailable: {report[^1]}");
            return new ComputeDevice(context, accelerator, kind, report);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The CPU accelerator, as tests use it.</summary>
    public static ComputeDevice OpenCpu() => Open("cpu");

    /// <summary>Every accelerator ILGPU can see on this machine.</summary>
    public static IReadOnlyList<DeviceInfo> Enumerate()
    {
        NativeLibraries.Register();
        using var context = CreateContext();
        var list = new List<DeviceInfo>();
        foreach (var device in context)
        {
            var kind = device.AcceleratorType switch
            {
                AcceleratorType.Cuda => DeviceKind.Cuda,
                AcceleratorType.OpenCL => DeviceKind.OpenCL,
                _ => DeviceKind.Cpu,
            };
            list.Add(new DeviceInfo(kind, device.Name, device.MemorySize, device.NumMultiprocessors, device.MaxNumThreadsPerGroup, device.WarpSize));
        }
        return list;
    }

    /// <summary>
    /// The ILGPU context: O2 and fast 32-bit math in Release (O1 with assertions in Debug), a CPU device
    /// sized for the grouped kernels, and the CUDA and OpenCL devices present.
    /// </summary>
    internal static Context CreateContext(int cpuCores = 0) => Context.Create(builder =>
    {
        builder
#if DEBUG
            .Optimize(OptimizationLevel.O1)
#else
            .Optimize(OptimizationLevel.O2)
#endif
            .Math(MathMode.Fast32BitOnly)
            .Profiling() // lets LaunchProfiler put markers on a GPU stream; no cost until a marker is added
            .CPU(CreateCpuDevice(cpuCores))
            .Cuda()
            .OpenCL();
        builder.EnableAlgorithms();
    });

    /// <summary>
    /// A CPU device with <see cref="CpuThreadsPerGroup"/> threads per group (warps of 4) and one
    /// multiprocessor per core: ILGPU runs one OS thread per simulated GPU thread.
    /// </summary>
    internal static CPUDevice CreateCpuDevice(int cores = 0) =>
        new(numThreadsPerWarp: 4, numWarpsPerMultiprocessor: CpuThreadsPerGroup / 4, numMultiprocessors: cores > 0 ? cores : Math.Max(1, Environment.ProcessorCount));

    /// <summary>Frees the pool, the accelerator and the context.</summary>
    public void Dispose()
    {
        Stream.Synchronize(); // not counted: the device is going away
        Pool.Dispose();
        Accelerator.Dispose();
        Context.Dispose();
    }
}

/// <summary>
/// Running totals of one device's stream operations, for tests, <c>ddpm summary</c> and the profiler. Each
/// count is one interlocked increment of a long (no allocation, no lock), cheap next to a launch.
/// </summary>
public sealed class DeviceCounters
{
    private long launches, clears, synchronizations;

    /// <summary>Kernel launches through <see cref="ComputeDevice.Launch{TKernel}(int, in TKernel)"/> and its grouped and grid-stride forms.</summary>
    public long Launches => Interlocked.Read(ref launches);

    /// <summary>Buffer clears (<see cref="DeviceBuffer{T}.Clear"/>: a memset on the stream, one more launch on a GPU).</summary>
    public long Clears => Interlocked.Read(ref clears);

    /// <summary>Stream operations a GPU would issue: <see cref="Launches"/> + <see cref="Clears"/>.</summary>
    public long Operations => Launches + Clears;

    /// <summary>
    /// Times the host waited for the device: <see cref="ComputeDevice.Synchronize"/>, every copy to or from the
    /// host (<see cref="DeviceBuffer{T}.ToArray"/>, <see cref="DeviceBuffer{T}.CopyFrom"/>, <see cref="DeviceBuffer{T}.CopyTo"/>),
    /// each counted once however many stream waits it makes.
    /// </summary>
    public long Synchronizations => Interlocked.Read(ref synchronizations);

    internal void CountLaunch() => Interlocked.Increment(ref launches);
    internal void CountClear() => Interlocked.Increment(ref clears);
    internal void CountSynchronization() => Interlocked.Increment(ref synchronizations);

    /// <summary>The counts now, to subtract from a later <see cref="Snapshot"/>.</summary>
    public DeviceCount Snapshot() => new(Launches, Clears, Synchronizations);
}

/// <summary>A reading of <see cref="DeviceCounters"/>; subtract two readings for the work between them.</summary>
public readonly record struct DeviceCount(long Launches, long Clears, long Synchronizations)
{
    /// <summary>Launches + clears.</summary>
    public long Operations => Launches + Clears;

    /// <summary>The work between two readings.</summary>
    public static DeviceCount operator -(DeviceCount later, DeviceCount earlier) =>
        new(later.Launches - earlier.Launches, later.Clears - earlier.Clears, later.Synchronizations - earlier.Synchronizations);
}

/// <summary>The requested device does not exist here; the message is one line for the user.</summary>
public sealed class DeviceUnavailableException(string message) : UserError(message);
