using System.Reflection;
using System.Text.RegularExpressions;
using IlgpuDdpm.Kernels.Attention;
using IlgpuDdpm.Kernels.Diffusion;
using IlgpuDdpm.Kernels.Matmul;
using IlgpuDdpm.Kernels.Norm;
using IlgpuDdpm.Kernels.Optim;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Kernels;

/// <summary>
/// Checks on the offline sm_90 PTX of the hot kernels (issue 9, point 4; docs/kernels.md, "PTX checks"): what a
/// GPU would run, read without a GPU. The hot kernels are the GEMM core (every instantiation the matmul, the
/// convolution and so the attention launch), group norm, the attention softmax, the optimizer (Adam, EMA, the
/// multi-tensor norm) and the diffusion kernels (the reverse step).
/// <list type="bullet">
/// <item>No <c>.local</c> declaration: nothing spilled into (slow, per-thread, off-chip) local memory.</item>
/// <item>The tiled GEMM's inner loop does at least 4 multiply-adds per shared-memory load (register blocking).</item>
/// <item>Hand-unrolled loops stay unrolled: the tiled GEMM's k loop holds its 4 k steps (4 × 16 shared loads per
/// iteration), the reductions' 4-accumulator loop holds 4 global loads per iteration.</item>
/// </list>
/// ILGPU writes a multiply-add as <c>mul.f32</c> then <c>add.f32</c> (ptxas fuses the pair into one FMA), so a
/// multiply-add is counted as a <c>fma</c>/<c>mad</c> or a mul–add pair: min(#mul.f32, #add.f32) + #fma + #mad.
/// </summary>
[TestFixture]
public sealed class PtxChecksTests
{
    private static readonly Type[] HotFamilies =
        [typeof(MatmulKernels), typeof(NormKernels), typeof(AttentionKernels), typeof(OptimKernels), typeof(MultiTensorKernels), typeof(DiffusionKernels)];

    private static bool IsTiledGemm(Type t) => t.IsGenericType && t.GetGenericTypeDefinition().Name.StartsWith("TiledGemm", StringComparison.Ordinal);
    private static bool IsBlockedGemm(Type t) => t.IsGenericType && t.GetGenericTypeDefinition().Name.StartsWith("BlockedGemm", StringComparison.Ordinal);

    private static IEnumerable<(Type Kernel, string Name, MethodInfo Entry)> Hot() =>
        PtxCompileTests.KernelEntries().Where(k =>
            IsTiledGemm(k.Kernel) || IsBlockedGemm(k.Kernel) || (k.Kernel.DeclaringType is { } owner && HotFamilies.Contains(owner))
            // a shared launcher running a hot family's op (the reverse step and the noising run in RandomKernels' Philox-block kernel)
            || (k.Kernel.IsGenericType && k.Kernel.GetGenericArguments().Any(a => a.DeclaringType is { } o && HotFamilies.Contains(o))));

    public static IEnumerable<TestCaseData> HotKernels() =>
        Hot().Select(k => new TestCaseData(k.Entry, k.Name).SetName($"NoLocalMemory({k.Name})"));

    public static IEnumerable<TestCaseData> TiledGemms() =>
        Hot().Where(k => IsTiledGemm(k.Kernel)).Select(k => new TestCaseData(k.Entry, k.Name).SetName($"GemmInnerLoop({k.Name})"));

    public static IEnumerable<TestCaseData> UnrolledReductions() =>
        PtxCompileTests.KernelEntries()
            .Where(k => k.Kernel == typeof(MultiTensorKernels.SegmentSquaresKernel) || (k.Kernel.IsGenericType && k.Kernel.GetGenericTypeDefinition() == typeof(NormKernels.RowSumsLoopKernel<,,>)))
            .Select(k => new TestCaseData(k.Entry, k.Name).SetName($"ReductionLoopUnrolled({k.Name})"));

    [Test]
    public void TheHotKernelsAreFound()
    {
        var names = Hot().Select(k => k.Name).ToArray();
        Assert.That(names.Count(n => n.StartsWith("TiledGemm", StringComparison.Ordinal)), Is.GreaterThanOrEqualTo(4), "the GEMM core's launched instantiations (matmul, conv)");
        Assert.That(names, Has.Some.Contains("AdamKernel").And.Some.Contains("ReverseStep").And.Some.Contains("GroupNorm").And.Some.Contains("Softmax"));
        Assert.That(UnrolledReductions().Count(), Is.GreaterThanOrEqualTo(2), "the multi-tensor sum of squares and group norm's row sums");
    }

    [TestCaseSource(nameof(HotKernels))]
    public void NoLocalMemory(MethodInfo entry, string name)
    {
        var ptx = PtxCompileTests.CompilePtx(entry);
        var local = ptx.Split('\n').Where(l => l.Contains(".local", StringComparison.Ordinal)).ToArray();
        Assert.That(local, Is.Empty, $"{name}: the PTX declares or uses local memory (a register spill or a local array):\n{string.Join("\n", local.Take(5))}");
    }

    [TestCaseSource(nameof(TiledGemms))]
    public void GemmInnerLoop(MethodInfo entry, string name)
    {
        var lines = PtxCompileTests.CompilePtx(entry).Split('\n');
        var loop = Ptx.InnermostLoops(lines).MaxBy(l => Ptx.Count(lines, l, "ld.shared."));
        int sharedLoads = Ptx.Count(lines, loop, "ld.shared.");
        int multiplyAdds = Ptx.MultiplyAdds(lines, loop);
        TestContext.Out.WriteLine($"{name}: inner loop lines {loop.Start}..{loop.End}: {sharedLoads} ld.shared, {multiplyAdds} multiply-adds, {(double)multiplyAdds / Math.Max(1, sharedLoads):F2} per load");
        Assert.That(sharedLoads, Is.GreaterThan(0), $"{name}: no loop loads from shared memory");
        Assert.That(multiplyAdds, Is.GreaterThanOrEqualTo(4 * sharedLoads), $"{name}: {multiplyAdds} multiply-adds for {sharedLoads} shared loads in the inner loop (need ≥ 4 per load: register blocking)");
        // 4 hand-unrolled k steps of 8 + 8 loads each: a loop that ILGPU rolled back up would hold 16.
        Assert.That(sharedLoads, Is.EqualTo(4 * 16), $"{name}: the k loop should hold its 4 unrolled k steps (64 shared loads per iteration)");
    }

    [TestCaseSource(nameof(UnrolledReductions))]
    public void ReductionLoopUnrolled(MethodInfo entry, string name)
    {
        var lines = PtxCompileTests.CompilePtx(entry).Split('\n');
        var loops = Ptx.InnermostLoops(lines).Select(l => (Loop: l, Loads: Ptx.Count(lines, l, "ld.global.f32"), Adds: Ptx.Count(lines, l, "add.ftz.f32") + Ptx.Count(lines, l, "add.f32"))).ToArray();
        TestContext.Out.WriteLine($"{name}: loops (global loads, float adds): {string.Join(", ", loops.Select(l => $"({l.Loads}, {l.Adds})"))}");
        // LoopSum's unrolled body holds 4 terms, its remainder loop 1: 4× the loads (a term of a fused activation's gradient loads x and dy, so 8 and 2).
        Assert.That(loops.Any(l => l.Loads > 0 && l.Adds >= 4 && loops.Any(r => 4 * r.Loads == l.Loads)),
                    $"{name}: no loop holding 4 terms of the remainder loop's one (ReduceKernels.LoopSum's unrolled body)");
    }
}

/// <summary>A little reading of PTX text: loops as backward branches, instruction counts in a line range.</summary>
internal static partial class Ptx
{
    [GeneratedRegex(@"^\s*([A-Za-z_$][\w$]*):")]
    private static partial Regex Label();

    [GeneratedRegex(@"\bbra(?:\.uni)?\s+([A-Za-z_$][\w$]*);")]
    private static partial Regex Branch();

    /// <summary>Loops: a branch at line End back to a label at line Start ≤ End.</summary>
    public static IEnumerable<(int Start, int End)> Loops(string[] lines)
    {
        var labels = new Dictionary<string, int>();
        for (int i = 0; i < lines.Length; i++)
            if (Label().Match(lines[i]) is { Success: true } m) labels[m.Groups[1].Value] = i;
        for (int j = 0; j < lines.Length; j++)
            if (Branch().Match(lines[j]) is { Success: true } b && labels.TryGetValue(b.Groups[1].Value, out int i) && i < j)
                yield return (i, j);
    }

    /// <summary>Loops that contain no other loop.</summary>
    public static IEnumerable<(int Start, int End)> InnermostLoops(string[] lines)
    {
        var loops = Loops(lines).ToArray();
        return loops.Where(l => !loops.Any(o => o != l && o.Start >= l.Start && o.End <= l.End));
    }

    /// <summary>Instructions in the loop whose opcode starts with <paramref name="opcode"/>.</summary>
    public static int Count(string[] lines, (int Start, int End) loop, string opcode)
    {
        int n = 0;
        for (int i = loop.Start; i <= loop.End; i++)
        {
            var text = lines[i].TrimStart();
            if (text.StartsWith('@')) text = text[(text.IndexOf(' ') + 1)..].TrimStart();
            if (text.StartsWith(opcode, StringComparison.Ordinal)) n++;
        }
        return n;
    }

    /// <summary>fma + mad + min(float multiplies, float adds) in the loop.</summary>
    public static int MultiplyAdds(string[] lines, (int Start, int End) loop) =>
        Count(lines, loop, "fma.") + Count(lines, loop, "mad.") +
        Math.Min(Count(lines, loop, "mul.ftz.f32") + Count(lines, loop, "mul.f32") + Count(lines, loop, "mul.rn.f32"),
                 Count(lines, loop, "add.ftz.f32") + Count(lines, loop, "add.f32") + Count(lines, loop, "add.rn.f32"));
}
