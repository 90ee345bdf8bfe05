using System.Collections.Concurrent;
using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Every kernel compiles to PTX for sm_90 with ILGPU's PTX backend — offline, no GPU needed — and the
/// PTX calls no undefined external function (what <c>MathF.FusedMultiplyAdd</c> turns into, for one):
/// such a kernel would fail only when a GPU loads it. Kernels are found by convention in the
/// IlgpuDdpm.Kernels assembly: every kernel struct (<see cref="IThreadKernel"/>, <see cref="IGroupKernel"/>,
/// <see cref="IElementKernel"/> — a generic one once per combination of the operator structs its
/// constraints admit, or those its family lists as <c>LaunchedKernels</c>) through its <see cref="KernelEntry"/> entry point.
/// </summary>
[TestFixture]
public sealed class PtxCompileTests
{
    private static readonly Type[] AssemblyTypes = typeof(ComputeDevice).Assembly.GetTypes();

    public static IEnumerable<TestCaseData> AllKernels() =>
        KernelEntries().Select(k => new TestCaseData(k.Entry).SetName($"PtxCompiles({k.Name})"));

    /// <summary>Every kernel struct (closed), its readable name and its entry point, ordered by name.</summary>
    internal static IEnumerable<(Type Kernel, string Name, MethodInfo Entry)> KernelEntries() =>
        AssemblyTypes.Where(t => t.IsValueType && t != typeof(GridStrideKernel<>))
            .SelectMany(Instantiations)
            .SelectMany(k => EntryPoints(k).Select(e => (k, e.Name, e.Entry)))
            .OrderBy(k => k.Name, StringComparer.Ordinal);

    // Kernel structs a family lists as the ones it launches (a static LaunchedKernels property): for a generic
    // kernel with many admissible combinations (the GEMM core: every operand × operand × epilogue), only those.
    private static readonly Type[] Launched = AssemblyTypes
        .Where(t => !t.ContainsGenericParameters)
        .Select(t => t.GetProperty("LaunchedKernels", BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic))
        .Where(p => p is not null && p.PropertyType == typeof(IEnumerable<Type>))
        .SelectMany(p => (IEnumerable<Type>)p!.GetValue(null)!)
        .ToArray();

    // The closed kernel types of a struct: itself, the instantiations listed as launched, or every admissible
    // combination of its type arguments.
    private static IEnumerable<Type> Instantiations(Type type)
    {
        if (!type.IsGenericTypeDefinition) return [type];
        var listed = Launched.Where(t => t.IsGenericType && t.GetGenericTypeDefinition() == type).ToArray();
        if (listed.Length > 0) return listed;
        IEnumerable<Type[]> combos = [[]];
        foreach (var parameter in type.GetGenericArguments())
        {
            var constraints = parameter.GetGenericParameterConstraints();
            var candidates = AssemblyTypes.Where(c => c.IsValueType && !c.IsGenericTypeDefinition && constraints.All(k => k.IsAssignableFrom(c))).ToArray();
            combos = combos.SelectMany(prefix => candidates.Select(c => prefix.Append(c).ToArray()));
        }
        return combos.Select(args => type.MakeGenericType(args));
    }

    private static IEnumerable<(string Name, MethodInfo Entry)> EntryPoints(Type kernel)
    {
        string name = Describe(kernel);
        var entry = typeof(KernelEntry);
        if (typeof(IThreadKernel).IsAssignableFrom(kernel))
            yield return (name, entry.GetMethod(nameof(KernelEntry.Threads))!.MakeGenericMethod(kernel));
        if (typeof(IGroupKernel).IsAssignableFrom(kernel))
            yield return (name, entry.GetMethod(nameof(KernelEntry.Groups))!.MakeGenericMethod(kernel));
        if (typeof(IElementKernel).IsAssignableFrom(kernel))
            yield return (name, entry.GetMethod(nameof(KernelEntry.Threads))!.MakeGenericMethod(typeof(GridStrideKernel<>).MakeGenericType(kernel)));
    }

    private static string Describe(Type t) =>
        (t.DeclaringType is { } outer ? outer.Name + "." : "") +
        (t.IsGenericType ? $"{t.Name[..t.Name.IndexOf('`')]}<{string.Join(", ", t.GetGenericArguments().Select(a => a.Name))}>" : t.Name);

    [Test]
    public void KernelsAreFoundByConvention() =>
        Assert.That(AllKernels().Count(), Is.GreaterThanOrEqualTo(3), "the kernel search found almost nothing: do the kernels still implement IThreadKernel, IGroupKernel or IElementKernel?");

    [TestCaseSource(nameof(AllKernels))]
    public void CompilesToPtxForSm90WithoutExternalCalls(MethodInfo kernel)
    {
        string ptx = CompilePtx(kernel);
        string name = $"{kernel.DeclaringType!.Name}.{kernel.Name}<{string.Join(", ", kernel.GetGenericArguments().Select(a => a.Name))}>";
        Assert.That(ptx, Does.Contain(".entry"), $"{name}: no entry point in the PTX");
        Assert.That(ptx, Does.Not.Contain(".extern .func"),
            $"{name}: the PTX calls an undefined external function (FusedMultiplyAdd? a Math function with no PTX intrinsic?)");
    }

    /// <summary>
    /// The sm_90 PTX of one kernel entry point, compiled offline as the device would (O2, fast 32-bit math). Compiled once
    /// per entry point for the whole suite: PtxChecksTests reads the same PTX again (a compile takes up to 5 s here).
    /// </summary>
    internal static string CompilePtx(MethodInfo kernel) => Compiled.GetOrAdd(kernel, Compile);

    private static readonly ConcurrentDictionary<MethodInfo, string> Compiled = new();

    private static string Compile(MethodInfo kernel)
    {
        using var context = Context.Create(b => b.Optimize(OptimizationLevel.O2).Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, null);
        var parameters = kernel.GetParameters();
        bool implicitlyGrouped = parameters.Length > 0 && parameters[0].ParameterType is var p &&
                                 (p == typeof(Index1D) || p == typeof(Index2D) || p == typeof(Index3D));
        var entry = implicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel)
            : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        return ((PTXCompiledKernel)backend.Compile(entry, default)).PTXAssembly;
    }
}
