using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

// The kernel structs are internal (nested in their families); ILGPU's CPU accelerator emits its kernel
// wrappers into a dynamic assembly named ILGPURuntime, which must be allowed to see them.
[assembly: InternalsVisibleTo("ILGPURuntime")]

namespace IlgpuDdpm.Kernels.Device;

/// <summary>
/// The work of ONE thread of an implicitly grouped kernel (no barriers, no shared memory). A kernel is a
/// <c>struct</c> that holds its arguments as fields (views, sizes, coefficients) and implements
/// <see cref="Execute"/>; <see cref="ComputeDevice.Launch{TKernel}(int, in TKernel)"/> runs it on
/// <c>threads</c> threads. Because the struct is the kernel's only parameter, one generic entry point
/// (<see cref="KernelEntry.Threads{TKernel}"/>) serves every kernel, whatever its arity, and a kernel generic
/// over operator structs (<c>UnaryKernel&lt;SiluOp&gt;</c>) is one more instantiation of it.
/// </summary>
public interface IThreadKernel
{
    /// <summary>Runs thread <paramref name="thread"/> (0 ≤ thread &lt; the launch's thread count).</summary>
    void Execute(int thread);
}

/// <summary>
/// The work of one thread of an explicitly grouped kernel: it reads <c>Grid</c>/<c>Group</c> indices itself
/// and may use <c>SharedMemory</c> and <c>Group.Barrier()</c>. Launched with an explicit
/// <see cref="KernelConfig"/> by <see cref="ComputeDevice.Launch{TKernel}(KernelConfig, in TKernel)"/>.
/// </summary>
public interface IGroupKernel
{
    /// <summary>Runs the calling thread (every thread of every group calls it).</summary>
    void Execute();
}

/// <summary>
/// One unit of an element-wise kernel: <see cref="Element"/> handles unit <c>e</c> (an element, a row, a
/// Philox block…). Launched as a grid-stride loop (<see cref="GridStrideKernel{TElement}"/>) by
/// <see cref="ComputeDevice.LaunchElements{TElement}(int, in TElement)"/>.
/// </summary>
public interface IElementKernel
{
    /// <summary>Processes unit <paramref name="e"/> (0 ≤ e &lt; the unit count).</summary>
    void Element(int e);
}

/// <summary>
/// The grid-stride loop, written once: thread <c>i</c> of <c>Stride</c> threads handles blocks
/// <c>i, i + Stride, …</c> of <c>Block</c> consecutive units below <c>Count</c>. On a GPU a block is one unit, so
/// neighbouring threads touch neighbouring addresses (coalesced); on ILGPU's CPU accelerator it is a thread's whole
/// share, so no two threads write one cache line (interleaved, they ran element kernels up to 25 % slower there).
/// </summary>
public readonly struct GridStrideKernel<TElement>(TElement element, int count, int stride, int block) : IThreadKernel
    where TElement : struct, IElementKernel
{
    private readonly TElement element = element;
    private readonly int count = count;
    private readonly int stride = stride;
    private readonly int block = block;

    /// <inheritdoc/>
    public void Execute(int thread)
    {
        // Steps of stride blocks, capped at the end: neither the step nor b·block (< count) can overflow.
        // A local copy: calling Element on the readonly field of an unconstrained struct type makes C# copy the whole
        // struct (its views and constants) before every call.
        var unit = element;
        int blocks = count / block + (count % block != 0 ? 1 : 0);
        for (int b = thread; b < blocks; b = b < blocks - stride ? b + stride : blocks)
        {
            int start = b * block;
            int end = start < count - block ? start + block : count;
            for (int e = start; e < end; e++) unit.Element(e);
        }
    }
}

/// <summary>
/// The two entry points ILGPU compiles: each is instantiated once per kernel struct. They are generic
/// methods so the PTX test finds every kernel through its struct (see tests/Kernels/PtxCompileTests.cs).
/// </summary>
public static class KernelEntry
{
    /// <summary>Implicitly grouped entry: thread <c>index</c> runs <c>kernel.Execute(index)</c>.</summary>
    public static void Threads<TKernel>(Index1D index, TKernel kernel) where TKernel : struct, IThreadKernel =>
        kernel.Execute(index.X);

    /// <summary>Explicitly grouped entry: every thread runs <c>kernel.Execute()</c>.</summary>
    public static void Groups<TKernel>(TKernel kernel) where TKernel : struct, IGroupKernel =>
        kernel.Execute();
}

/// <summary>
/// The typed delegates of one device, one per kernel struct, loaded on first launch. THE place that
/// decides how a kernel is grouped:
/// <list type="bullet">
/// <item><see cref="IThreadKernel"/>: one thread per group on ILGPU's CPU accelerator, auto-grouped elsewhere.
/// On the CPU accelerator every group is a set of OS threads meeting at barriers, so a launch of auto-sized
/// groups costs milliseconds before any work is done; groups of ONE thread cost a few hundred microseconds
/// (measured: 0.26 ms vs 5.7 ms for an empty launch; the convolution ran 3–4× faster). The kernel is the
/// same; only the grouping differs.</item>
/// <item><see cref="IGroupKernel"/>: the explicit group size of the launch's <see cref="KernelConfig"/>.</item>
/// </list>
/// The delegates are typed (<c>Action&lt;AcceleratorStream, Index1D, TKernel&gt;</c>): a launch never boxes.
/// </summary>
internal sealed class KernelCache(Accelerator accelerator, bool isCpu)
{
    private readonly ConcurrentDictionary<Type, Delegate> loaded = new();

    public Action<AcceleratorStream, Index1D, TKernel> Threads<TKernel>() where TKernel : struct, IThreadKernel =>
        loaded.TryGetValue(typeof(TKernel), out var d)
            ? (Action<AcceleratorStream, Index1D, TKernel>)d
            : (Action<AcceleratorStream, Index1D, TKernel>)loaded.GetOrAdd(typeof(TKernel), static (_, self) => self.LoadThreads<TKernel>(), this);

    public Action<AcceleratorStream, KernelConfig, TKernel> Groups<TKernel>() where TKernel : struct, IGroupKernel =>
        loaded.TryGetValue(typeof(TKernel), out var d)
            ? (Action<AcceleratorStream, KernelConfig, TKernel>)d
            : (Action<AcceleratorStream, KernelConfig, TKernel>)loaded.GetOrAdd(typeof(TKernel), static (_, self) => self.LoadGroups<TKernel>(), this);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Action<AcceleratorStream, Index1D, TKernel> LoadThreads<TKernel>() where TKernel : struct, IThreadKernel =>
        isCpu
            ? accelerator.LoadImplicitlyGroupedKernel<Index1D, TKernel>(KernelEntry.Threads, 1)
            : accelerator.LoadAutoGroupedKernel<Index1D, TKernel>(KernelEntry.Threads);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Action<AcceleratorStream, KernelConfig, TKernel> LoadGroups<TKernel>() where TKernel : struct, IGroupKernel =>
        accelerator.LoadKernel<TKernel>(KernelEntry.Groups);
}

/// <summary>
/// How a grid-stride launch is sized: T = ceil(units / <see cref="MinItemsPerThread"/>) threads, at most
/// <see cref="MaxThreads"/>; thread i handles units i, i + T, i + 2T, …
/// On a GPU T = ceil(units / 4): four units per thread. On ILGPU's CPU accelerator, where every simulated
/// thread is an OS thread and costs far more than the arithmetic, T = ceil(units / 2048) capped at 2 per core.
/// </summary>
public readonly record struct GridStride(int MinItemsPerThread, int MaxThreads)
{
    /// <summary>Units per thread on a GPU: a few, so loads stay coalesced and occupancy high.</summary>
    public const int GpuItemsPerThread = 4;

    /// <summary>Smallest share of a thread on ILGPU's CPU accelerator, where a thread costs microseconds.</summary>
    public const int CpuMinItemsPerThread = 2048;

    /// <summary>Threads per core on ILGPU's CPU accelerator: enough to keep every core busy, few enough to stay cheap.</summary>
    public const int CpuThreadsPerCore = 2;

    /// <summary>The launch shape for <paramref name="device"/>.</summary>
    public static GridStride For(ComputeDevice device) => device.IsCpu
        ? new(CpuMinItemsPerThread, CpuThreadsPerCore * Math.Max(1, Environment.ProcessorCount))
        : new(GpuItemsPerThread, int.MaxValue);

    /// <summary>Threads for <paramref name="units"/> units of work (at least 1).</summary>
    public int Threads(int units)
    {
        if (MinItemsPerThread < 1 || MaxThreads < 1) throw new InvalidOperationException($"bad launch shape {this}");
        long t = ((long)units + MinItemsPerThread - 1) / MinItemsPerThread;
        return (int)Math.Clamp(t, 1, MaxThreads);
    }
}

/// <summary>
/// A family whose kernels are all grid-stride loops (<see cref="IElementKernel"/>) sized by one launch shape:
/// the device's <see cref="ComputeDevice.ElementShape"/>, or a chosen one in tests (the GPU's, and odd ones, on the CPU).
/// </summary>
public abstract class GridStrideFamily(ComputeDevice device, GridStride launch)
{
    /// <summary>The device the family launches on.</summary>
    protected ComputeDevice Device { get; } = device;

    /// <summary>How launches are sized on this family's device.</summary>
    internal GridStride Launch { get; } = launch;

    /// <summary>Runs <paramref name="element"/> over <paramref name="units"/> units with this family's shape.</summary>
    protected void Run<TElement>(int units, in TElement element) where TElement : struct, IElementKernel =>
        Device.LaunchElements(Launch, units, element);
}

/// <summary>
/// Times every launch of a device and attributes it to the kernel struct (a grid-stride launch to its element
/// struct) — <c>ddpm train --profile</c>. Set it as <see cref="ComputeDevice.Profiler"/>, run the steps, read
/// <see cref="Entries"/>. On ILGPU's CPU accelerator the stream is synchronised before and after each launch
/// and the wall time between is the kernel's. On a GPU each launch is bracketed by two of ILGPU's profiling
/// markers (device-side timestamps, the context is built with profiling on), and the launches run
/// back to back; <see cref="Collect"/> waits once and reads them.
/// </summary>
public sealed class LaunchProfiler
{
    private readonly Dictionary<Type, (long Launches, double Milliseconds)> totals = new();
    private readonly List<(Type Kernel, ProfilingMarker Start, ProfilingMarker End)> pending = new();
    private ProfilingMarker? openMarker;

    internal long Begin(ComputeDevice device)
    {
        if (!device.IsCpu && device.Context.Properties.EnableProfiling)
        {
            openMarker = device.Stream.AddProfilingMarker();
            return 0;
        }
        device.Stream.Synchronize();
        return Stopwatch.GetTimestamp();
    }

    internal void End(ComputeDevice device, Type kernel, long start)
    {
        if (openMarker is { } marker)
        {
            pending.Add((kernel, marker, device.Stream.AddProfilingMarker()));
            openMarker = null;
            return;
        }
        device.Stream.Synchronize();
        Add(kernel, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
    }

    /// <summary>A launch that was counted and not run (<see cref="ComputeDevice.CountsOnly"/>): one more launch, no time.</summary>
    internal void CountOnly(Type kernel) => Add(kernel, 0);

    private void Add(Type kernel, double milliseconds)
    {
        totals.TryGetValue(kernel, out var t);
        totals[kernel] = (t.Launches + 1, t.Milliseconds + milliseconds);
    }

    /// <summary>Reads the GPU markers queued so far (waits for them); nothing to do on the CPU.</summary>
    public void Collect()
    {
        foreach (var (kernel, start, end) in pending)
        {
            end.Synchronize();
            Add(kernel, end.MeasureFrom(start).TotalMilliseconds);
            start.Dispose();
            end.Dispose();
        }
        pending.Clear();
    }

    /// <summary>Every kernel launched so far, with its family, launches and total time; largest total first.</summary>
    public IReadOnlyList<KernelTime> Entries
    {
        get
        {
            Collect();
            return totals.Select(kv => new KernelTime(FamilyOf(kv.Key), KernelName(kv.Key), kv.Value.Launches, kv.Value.Milliseconds))
                         .OrderByDescending(e => e.Milliseconds).ThenBy(e => e.Family, StringComparer.Ordinal).ThenBy(e => e.Kernel, StringComparer.Ordinal).ToList();
        }
    }

    /// <summary>Forgets everything recorded.</summary>
    public void Reset()
    {
        Collect();
        totals.Clear();
    }

    /// <summary>The struct that does the work: a grid-stride launch's element struct, else the kernel itself.</summary>
    internal static Type WorkType(Type kernel) =>
        kernel.IsGenericType && kernel.GetGenericTypeDefinition() == typeof(GridStrideKernel<>) ? kernel.GetGenericArguments()[0] : kernel;

    /// <summary>
    /// The family a kernel struct belongs to: "Conv" for a struct nested in <c>ConvKernels</c>; for a struct at
    /// namespace level (the GEMM core's) the last part of its namespace ("Matmul").
    /// </summary>
    public static string FamilyOf(Type kernel)
    {
        var work = WorkType(kernel);
        if (work.DeclaringType is null) return work.Namespace is { } ns ? ns[(ns.LastIndexOf('.') + 1)..] : work.Name;
        var owner = work.DeclaringType;
        var name = owner.IsGenericType ? owner.Name[..owner.Name.IndexOf('`')] : owner.Name;
        return name.EndsWith("Kernels", StringComparison.Ordinal) && name.Length > "Kernels".Length ? name[..^"Kernels".Length] : name;
    }

    /// <summary>The kernel struct's name with its type arguments, e.g. <c>UnaryKernel&lt;SiluOp&gt;</c>.</summary>
    public static string KernelName(Type kernel) => Readable(WorkType(kernel));

    private static string Readable(Type t)
    {
        if (!t.IsGenericType) return t.Name;
        string name = t.Name[..t.Name.IndexOf('`')];
        return $"{name}<{string.Join(", ", t.GetGenericArguments().Select(Readable))}>";
    }
}

/// <summary>One kernel's share of a profile: its family, struct name, launches and total milliseconds.</summary>
public sealed record KernelTime(string Family, string Kernel, long Launches, double Milliseconds);
