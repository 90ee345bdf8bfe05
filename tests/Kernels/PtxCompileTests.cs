using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using IlgpuDdpm.Kernels.Conv;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Matmul;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Every kernel compiles to PTX for sm_90 with ILGPU's PTX backend — offline, no GPU needed — and the
/// PTX calls no undefined external function (what <c>MathF.FusedMultiplyAdd</c> turns into, for one):
/// such a kernel would fail only when a GPU loads it. Kernels are found by convention: every static
/// method named <c>…Kernel</c> in the IlgpuDdpm.Kernels assembly.
/// </summary>
[TestFixture]
public sealed class PtxCompileTests
{
    public static IEnumerable<MethodInfo> AllKernels() =>
        typeof(ComputeDevice).Assembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal) && m.ReturnType == typeof(void) && !m.IsGenericMethodDefinition)
            .OrderBy(m => m.DeclaringType!.Name).ThenBy(m => m.Name)
            .Concat(MatmulKernels.GemmInstantiations)   // the generic GEMM core, once per operand/epilogue combination launched
            .Concat(ConvKernels.GenericInstantiations);

    [Test]
    public void KernelsAreFoundByConvention() =>
        Assert.That(AllKernels().Count(), Is.GreaterThanOrEqualTo(3), "the kernel search found almost nothing: is the naming convention (…Kernel) kept?");

    [TestCaseSource(nameof(AllKernels))]
    public void CompilesToPtxForSm90WithoutExternalCalls(MethodInfo kernel)
    {
        using var context = Context.Create(b => b.Optimize(OptimizationLevel.O2).Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, null);
        var parameters = kernel.GetParameters();
        bool implicitlyGrouped = parameters.Length > 0 && parameters[0].ParameterType is var p &&
                                 (p == typeof(Index1D) || p == typeof(Index2D) || p == typeof(Index3D));
        var entry = implicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel)
            : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, default);
        Assert.That(compiled.PTXAssembly, Does.Contain(".entry"), $"{kernel.DeclaringType!.Name}.{kernel.Name}: no entry point in the PTX");
        Assert.That(compiled.PTXAssembly, Does.Not.Contain(".extern .func"),
            $"{kernel.DeclaringType!.Name}.{kernel.Name}: the PTX calls an undefined external function (FusedMultiplyAdd? a Math function with no PTX intrinsic?)");
    }
}
