namespace IlgpuDdpm.Bench;

/// <summary>
/// The work one measured invocation does, for the throughput columns: floating-point operations (multiply and
/// add each count one), compulsory bytes moved to and from device memory (each input read once, each output
/// written once; 4 bytes a float), and images processed (train step, sampling). Already multiplied by the
/// kernel launches per invocation.
/// </summary>
public readonly record struct Work(double Flops, double Bytes, double Images = 0, int Launches = 1)
{
    /// <summary>Compute-bound work: FLOPs per launch × launches.</summary>
    public static Work Compute(double flopsPerLaunch, int launches) => new(flopsPerLaunch * launches, 0, 0, launches);

    /// <summary>Memory-bound work: bytes per launch × launches.</summary>
    public static Work Memory(double bytesPerLaunch, int launches) => new(0, bytesPerLaunch * launches, 0, launches);

    /// <summary>Whole-network work: images per invocation (and the FLOPs they take, when known).</summary>
    public static Work Network(double images, double flops) => new(flops, 0, images, 1);

    /// <summary>What the throughput is measured in.</summary>
    public WorkKind Kind => Images > 0 ? WorkKind.Images : Flops > 0 ? WorkKind.Compute : WorkKind.Memory;
}

/// <summary>Which peak a benchmark is set against.</summary>
public enum WorkKind { Compute, Memory, Images }

/// <summary>
/// A benchmark case (the value of a class's <c>Case</c> parameter): its name is the Case column, and it says
/// how much work each of the class's benchmark methods does per invocation.
/// </summary>
public abstract class BenchCase(string name) : IComparable<BenchCase>, IComparable
{
    private static int created;

    /// <summary>Creation order: BenchmarkDotNet sorts parameter values, and cases sort in the order they were declared.</summary>
    public int Order { get; } = Interlocked.Increment(ref created);

    /// <inheritdoc/>
    public int CompareTo(BenchCase? other) => other is null ? 1 : Order.CompareTo(other.Order);

    /// <inheritdoc/>
    public int CompareTo(object? obj) => CompareTo(obj as BenchCase);

    /// <summary>Short name shown in the Case column.</summary>
    public string Name { get; } = name;

    /// <summary>Work per invocation of the benchmark method named <paramref name="method"/>.</summary>
    public abstract Work WorkOf(string method);

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>A case whose work is the same for every method of its class, or chosen by a function of the method name.</summary>
public sealed class SimpleCase(string name, Func<string, Work> work) : BenchCase(name)
{
    /// <inheritdoc/>
    public override Work WorkOf(string method) => work(method);
}

/// <summary>A case with one size (elements, parameters) that its setup reads.</summary>
public sealed class SizeCase(string name, int size, Func<string, Work> work) : BenchCase(name)
{
    /// <summary>The element count.</summary>
    public int Size { get; } = size;

    /// <inheritdoc/>
    public override Work WorkOf(string method) => work(method);
}
