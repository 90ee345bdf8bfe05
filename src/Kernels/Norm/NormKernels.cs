using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Norm;

/// <summary>
/// The dimensions of a group normalisation: x [N, C, S] (S = product of the spatial dimensions),
/// <see cref="Groups"/> groups of <see cref="ChannelsPerGroup"/> consecutive channels.
/// </summary>
public readonly struct GroupNormDims
{
    /// <summary>Checks and stores the dimensions; throws <see cref="ArgumentException"/> on a bad combination.</summary>
    public GroupNormDims(int n, int channels, int groups, int spatial)
    {
        if (n <= 0 || channels <= 0 || groups <= 0 || spatial <= 0)
            throw new ArgumentException($"group norm: N, C, groups and spatial size must be positive, got N={n}, C={channels}, groups={groups}, S={spatial}");
        if (channels % groups != 0)
            throw new ArgumentException($"group norm: channels ({channels}) must be divisible by groups ({groups})");
        if ((long)n * channels * spatial > int.MaxValue)
            throw new ArgumentException($"group norm: N·C·S = {(long)n * channels * spatial} exceeds 2^31 − 1 (32-bit indices)");
        N = n;
        C = channels;
        Groups = groups;
        Spatial = spatial;
    }

    /// <summary>Batch size.</summary>
    public int N { get; }

    /// <summary>Channels.</summary>
    public int C { get; }

    /// <summary>Groups G (C divisible by G).</summary>
    public int Groups { get; }

    /// <summary>Spatial size S (H·W, or 1 for [N, C] inputs).</summary>
    public int Spatial { get; }

    /// <summary>C / G.</summary>
    public int ChannelsPerGroup => C / Groups;

    /// <summary>M = C/G · S: the number of values one mean and variance are taken over.</summary>
    public int GroupSize => C / Groups * Spatial;

    /// <summary>N · C · S.</summary>
    public int Length => N * C * Spatial;

    /// <summary>N · G: the number of (n, g) statistics.</summary>
    public int StatCount => N * Groups;

    /// <inheritdoc/>
    public override string ToString() => $"N={N}, C={C}, G={Groups}, S={Spatial}";
}

/// <summary>
/// Group normalisation (Wu &amp; He 2018) forward and backward. Channels c of group g = c / (C/G) are
/// consecutive, so the M = C/G·S values of one (n, g) form one contiguous row of x: row r = n·G + g.
/// Every sum is the deterministic reduction of <see cref="ReduceKernels"/> (fixed order, no atomics,
/// <see cref="ReductionVariant"/>): a row's two sums (the statistics; the backward's per-channel sums) in one
/// thread or group with its LoopSum / TreeSum, the rest through <see cref="ReduceKernels.Rows{TTerm, TSink}"/>;
/// the normalisation and the input gradient are element-wise kernels. An activation that follows the norm
/// (<see cref="IUnaryOp"/>: the U-Net's SiLU) can be fused into both passes, saving its two launches per step.
/// </summary>
public sealed class NormKernels : IKernelFamily<NormKernels>
{
    /// <summary>
    /// Self-check probes (N, C, G, H·W): a tiny preset block, a shape off every power of two, and a long group (GPU
    /// tree loops). Tolerance: two-pass statistics and backward sums in another order (tree vs loop).
    /// </summary>
    public static KernelProbes Probes { get; } = new("Norm", 1e-4, [.. new[] { new GroupNormDims(2, 16, 4, 8 * 8), new GroupNormDims(3, 12, 4, 7 * 9),
        new GroupNormDims(2, 64, 8, 33 * 33) }.Select(d => new KernelProbe($"GroupNorm forward+backward {d}", k =>
    {
        var (norm, x, gamma, beta, mean, rstd) = (k.Kernels<NormKernels>(), k.In(d.Length, -2f, 3f), k.In(d.C, 0.5f, 1.5f), k.In(d.C, -0.5f, 0.5f), k.Out(d.StatCount), k.Out(d.StatCount));
        norm.Forward(x.View, gamma.View, beta.View, k.Out(d.Length).View, mean.View, rstd.View, d);
        norm.Backward(x.View, gamma.View, beta.View, mean.View, rstd.View, k.In(d.Length).View, k.Out(d.Length).View, k.Out(d.C).View, k.Out(d.C).View, d);
        norm.Forward(new SiluOp(), new NoMask(), x.View, gamma.View, beta.View, k.Out(d.Length).View, mean.View, rstd.View, d); // GroupNorm + SiLU, fused
        norm.Backward(new SiluOp(), new NoMask(), x.View, gamma.View, beta.View, mean.View, rstd.View, k.In(d.Length).View, k.Out(d.Length).View, k.Out(d.C).View, k.Out(d.C).View, d);
    }))]);

    private readonly ComputeDevice device;
    private readonly ReduceKernels reduce;

    private NormKernels(ComputeDevice device) => (this.device, reduce) = (device, device.Kernels<ReduceKernels>());

    /// <inheritdoc/>
    public static NormKernels Create(ComputeDevice device) => new(device);

    // =============================================================================================
    // Forward
    //   x [N,C,S], gamma [C], beta [C] -> y [N,C,S], mean [N,G], rstd [N,G]
    //   μ = (1/M) Σ x,  σ² = (1/M) Σ (x − μ)²  (biased, two passes: no E[x²] − E[x]² cancellation),
    //   rstd = 1/√(σ² + eps),  y = (x − μ)·rstd·γ[c] + β[c].

    // Two sums over row r of one launch by one thread (the reduction's loop order) or one group (its tree
    // order), the second term built from the first sum: the variance needs the mean, and the backward's
    // Σdy and Σdy·x̂ of a row are both taken while the row is in cache (one row reduction per sum read x and
    // dy twice and ran group norm's backward 1.6–2.1× slower on the CPU, bench/RESULTS.md).
    // Then, with both sums known to every thread that took them, Elements visits the row's elements i = from,
    // from + step, … < end (the loop: all of them; the tree: thread t's share), so the normalisation needs no
    // launch of its own (issue 9).
    internal interface IRowSums<TFirst, TSecond> where TFirst : struct, IReductionTerm where TSecond : struct, IReductionTerm
    {
        TFirst First(int r);

        TSecond Second(int r, float first);

        void Write(int r, float first, float second);

        void Elements(int r, int from, int end, int step, float first, float second);
    }

    internal readonly struct RowSumsLoopKernel<TRow, TFirst, TSecond>(TRow row, int length) : IElementKernel
        where TRow : struct, IRowSums<TFirst, TSecond> where TFirst : struct, IReductionTerm where TSecond : struct, IReductionTerm
    {
        public void Element(int r)
        {
            int start = r * length;
            float first = ReduceKernels.LoopSum(row.First(r), r, start, start + length);
            float second = ReduceKernels.LoopSum(row.Second(r, first), r, start, start + length);
            row.Write(r, first, second);
            row.Elements(r, start, start + length, 1, first, second);
        }
    }

    internal readonly struct RowSumsTreeKernel<TRow, TFirst, TSecond>(TRow row, int length) : IGroupKernel
        where TRow : struct, IRowSums<TFirst, TSecond> where TFirst : struct, IReductionTerm where TSecond : struct, IReductionTerm
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(ReduceKernels.MaxTreeWidth);
            int r = Grid.IdxX;
            int start = r * length;
            float first = ReduceKernels.TreeSum(row.First(r), r, start, start + length, shared);
            float second = ReduceKernels.TreeSum(row.Second(r, first), r, start, start + length, shared);
            if (Group.IdxX == 0) row.Write(r, first, second);
            row.Elements(r, start + Group.IdxX, start + length, Group.DimX, first, second);
        }
    }

    private void RowSums<TRow, TFirst, TSecond>(TRow row, int rows, int length, ReductionVariant variant, int maxTreeWidth)
        where TRow : struct, IRowSums<TFirst, TSecond> where TFirst : struct, IReductionTerm where TSecond : struct, IReductionTerm
    {
        if (reduce.Resolve(variant) == ReductionVariant.GroupTree)
            device.Launch(new KernelConfig(rows, ReduceKernels.PowerOfTwoAtLeast(length, reduce.Width(maxTreeWidth))), new RowSumsTreeKernel<TRow, TFirst, TSecond>(row, length));
        else
            device.LaunchElements(reduce.SegmentShape(length), rows, new RowSumsLoopKernel<TRow, TFirst, TSecond>(row, length));
    }

    // The row-sum kernels' instantiations, for the PTX test: the forward's and the backward's once per operator struct
    // that could be fused in (every IUnaryOp of this assembly, so a new activation is listed by being written) and each
    // element mask (IElementMask: none, dropout's).
    internal static IEnumerable<Type> LaunchedKernels
    {
        get
        {
            var types = typeof(NormKernels).Assembly.GetTypes().Where(t => t.IsValueType && !t.IsGenericTypeDefinition).ToArray();
            var (operators, masks) = (types.Where(typeof(IUnaryOp).IsAssignableFrom), types.Where(typeof(IElementMask).IsAssignableFrom).ToArray());
            var rows = operators.SelectMany(op => masks.SelectMany(mask => new[]
            {
                new[] { typeof(StatsRow<,>).MakeGenericType(op, mask), typeof(ValueTerm), typeof(CenteredSquareTerm) },
                new[] { typeof(ChannelRow<,>).MakeGenericType(op, mask), typeof(GateTerm<,>).MakeGenericType(op, mask), typeof(GateXhatTerm<,>).MakeGenericType(op, mask) },
            }));
            return rows.SelectMany(args => new[] { typeof(RowSumsLoopKernel<,,>).MakeGenericType(args), typeof(RowSumsTreeKernel<,,>).MakeGenericType(args) });
        }
    }

    // (x[i] − μ)² with the row's mean μ held in a register.
    internal readonly struct CenteredSquareTerm(ArrayView<float> x, float mu) : IReductionTerm
    {
        public float At(int r, int i)
        {
            float d = x[i] - mu;
            return d * d;
        }
    }

    // Statistics row r = n·G + g of M values: Σx, then Σ(x − μ)² with μ = Σx / M; then every y[i] of the row
    // = mask_i·f((x[i] − μ)·rstd·γ[c] + β[c]), f the fused activation (IdentityOp: none), mask the fused dropout's
    // (NoMask: none), c = (i / S) mod C, γ[c] and β[c] loaded once per channel run of the row.
    internal readonly struct StatsRow<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd,
                                           int m, float eps, int spatial, int channels) : IRowSums<ValueTerm, CenteredSquareTerm>
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        public ValueTerm First(int r) => new(x);

        public CenteredSquareTerm Second(int r, float sum) => new(x, sum / m);

        public void Write(int r, float sum, float squares)
        {
            Statistics(sum, squares, out float mu, out float rs);
            mean[r] = mu;
            rstd[r] = rs;
        }

        public void Elements(int r, int from, int end, int step, float sum, float squares)
        {
            Statistics(sum, squares, out float mu, out float rs);
            for (int i = from; i < end;)
            {
                int nc = i / spatial, c = nc % channels, stop = Math.Min(end, nc * spatial + spatial);
                float g = gamma[c], b = beta[c];
                for (; i < stop; i += step) y[i] = mask.Apply(i, op.Forward((x[i] - mu) * rs * g + b));
            }
        }

        // μ = Σx / M and rstd = 1/√(Σ(x − μ)²/M + eps), written once so that what is stored and what y uses are the same bits.
        private void Statistics(float sum, float squares, out float mu, out float rs)
        {
            mu = sum / m;
            rs = 1f / MathF.Sqrt(squares / m + eps);
        }
    }

    // The backward's element-wise unit: `run` consecutive elements of one (n, c) row (run divides S), whose
    // statistics row is n·G + c/(C/G) = nc / (C/G). With the per-thread loop (the CPU accelerator's) a unit is
    // the whole row, so the row's constants are loaded once (per element, the backward ran 1.7× slower there);
    // with the group tree (a GPU's) it is one element, so neighbouring threads read neighbouring addresses.
    private int Run(GroupNormDims dims, ReductionVariant variant) => reduce.Resolve(variant) == ReductionVariant.PerThreadLoop ? dims.Spatial : 1;

    /// <summary>
    /// x [N,C,S], gamma [C], beta [C] -> y [N,C,S]; also writes mean [N·G] and rstd [N·G] = 1/√(σ²+eps)
    /// for <see cref="Backward"/>. σ² is the biased variance over the C/G·S values of each (n, g).
    /// <paramref name="maxTreeWidth"/> caps the tree variant's group (0 = the widest; tests use small ones).
    /// </summary>
    public void Forward(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, GroupNormDims dims, float eps = 1e-5f, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0) =>
        Forward(new IdentityOp(), new NoMask(), x, gamma, beta, y, mean, rstd, dims, eps, variant, maxTreeWidth);

    /// <summary>
    /// <see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, GroupNormDims, float, ReductionVariant, int)"/>
    /// followed by the activation <paramref name="op"/> and the per-element <paramref name="mask"/> (dropout's, or
    /// <see cref="NoMask"/>), in the same launch: y_i = mask_i·op(GroupNorm(x)_i), bit for bit what the kernels give one
    /// after the other; the normalised and activated values are never stored.
    /// </summary>
    public void Forward<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, GroupNormDims dims, float eps = 1e-5f, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0)
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        ExpectOperands(x, y, "y", gamma, beta, mean, rstd, dims);
        if (!(eps > 0f)) throw new ArgumentException($"group norm: eps must be positive, got {eps}");
        int m = dims.GroupSize;
        RowSums<StatsRow<TOp, TMask>, ValueTerm, CenteredSquareTerm>(new StatsRow<TOp, TMask>(op, mask, x, gamma, beta, y, mean, rstd, m, eps, dims.Spatial, dims.C), dims.StatCount, m, variant, maxTreeWidth);
    }

    // =============================================================================================
    // Backward (x̂ = (x − μ)·rstd, g = dy·γ[c], sums over the M values of the (n, g) row):
    //   dβ[c] += Σ_{n,s} dy,   dγ[c] += Σ_{n,s} dy·x̂,
    //   dx     += rstd · ( g − (1/M) Σ g − x̂ · (1/M) Σ g·x̂ )
    // the standard batch/layer/group-norm input gradient (Ioffe & Szegedy 2015, §3; Wu & He 2018 use the
    // same with the group as the normalisation set). Because γ is constant over a channel,
    //   Σ_row g = Σ_{c∈g} γ[c]·A[n,c],  Σ_row g·x̂ = Σ_{c∈g} γ[c]·B[n,c],
    // with the per-(n,c) sums A = Σ_s dy, B = Σ_s dy·x̂ — which also give dβ = Σ_n A, dγ = Σ_n B.
    // With an activation f fused after the norm, dy in all of this is the gradient below it, dz = dy·f′(z) at
    // z = x̂·γ[c] + β[c], recomputed where it is read (the same bits as f's own backward kernel, never stored); with
    // dropout fused after f, the dy that f's derivative takes is mask_i·dy[i], the mask regenerated from its key.
    // Every sum is deterministic, in two launches: (1) A, B over the S values of each (n,c), both in one pass
    // (RowSums); then (2) one element-wise launch in which every unit takes its row's Σγ·A, Σγ·B over the C/G
    // channels of its (n,g) (LoopSum's order: a few loads, each shared by the unit's elements) and adds dx, and the
    // unit that starts channel c of image 0 also adds dβ[c] = Σ_n A, dγ[c] = Σ_n B (the LoopSum of a row reduction,
    // so on the CPU accelerator the bits of the four launches this replaces).

    // dz[i] = op.Backward(z, mask_i·dy[i]) at z = x̂·γ + β, with the row's μ, rstd, γ[c] and β[c] held in registers (IdentityOp, NoMask: dy[i]).
    internal readonly struct GateTerm<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> dy, float mu, float rs, float g, float b) : IReductionTerm
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        public float At(int r, int i) => op.Backward((x[i] - mu) * rs * g + b, mask.Apply(i, dy[i]));
    }

    // dz[i]·x̂[i].
    internal readonly struct GateXhatTerm<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> dy, float mu, float rs, float g, float b) : IReductionTerm
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        public float At(int r, int i)
        {
            float xhat = (x[i] - mu) * rs;
            return op.Backward(xhat * g + b, mask.Apply(i, dy[i])) * xhat;
        }
    }

    // (1) Row nc = n·C + c of S values: A = Σ dz, B = Σ dz·x̂, its statistics row n·G + c/(C/G) = nc / (C/G).
    internal readonly struct ChannelRow<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> mean, ArrayView<float> rstd,
                                             ArrayView<float> partials, int channelsPerGroup, int channels, int count) : IRowSums<GateTerm<TOp, TMask>, GateXhatTerm<TOp, TMask>>
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        public GateTerm<TOp, TMask> First(int nc) => new(op, mask, x, dy, mean[nc / channelsPerGroup], rstd[nc / channelsPerGroup], gamma[nc % channels], beta[nc % channels]);

        public GateXhatTerm<TOp, TMask> Second(int nc, float a) => new(op, mask, x, dy, mean[nc / channelsPerGroup], rstd[nc / channelsPerGroup], gamma[nc % channels], beta[nc % channels]);

        public void Write(int nc, float a, float b)
        {
            partials[nc] = a;
            partials[count + nc] = b;
        }

        public void Elements(int nc, int from, int end, int step, float a, float b) { }
    }

    // Column col of the 2C columns (β's C, then γ's C), index i = col·N + n: partials[block·N·C + n·C + c] with
    // block = col / C (0: A, 1: B), c = col mod C.
    internal readonly struct ChannelColumnTerm(ArrayView<float> partials, int n, int channels) : IReductionTerm
    {
        public float At(int col, int i)
        {
            int block = col / channels;
            return partials[block * n * channels + (i - col * n) * channels + (col - block * channels)];
        }
    }

    // 2·N·G rows of C/G: row r, index i = r·(C/G) + k is partials[i] = A or B of (n, c = i mod C), weighted by γ[c].
    internal readonly struct GammaWeightedTerm(ArrayView<float> partials, ArrayView<float> gamma, int channels) : IReductionTerm
    {
        public float At(int r, int i) => gamma[i % channels] * partials[i];
    }

    // (2) A unit of `run` elements of one (n, c) row (see Run): dx[i] += rstd·(dz·γ[c] − (Σg + x̂·Σg·x̂)/M) when wantX;
    // the unit starting channel c of image 0 adds dβ[c] += Σ_n A and dγ[c] += Σ_n B when wanted.
    internal readonly struct GroupNormBackwardKernel<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> partials, ArrayView<float> dx, ArrayView<float> dgamma, ArrayView<float> dbeta, GroupNormDims dims, int run, int wantX, int wantGamma, int wantBeta) : IElementKernel
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        public void Element(int u)
        {
            int start = u * run, nc = start / dims.Spatial, c = nc % dims.C;
            if (nc < dims.C && start == nc * dims.Spatial)
            {
                var column = new ChannelColumnTerm(partials, dims.N, dims.C);
                if (wantBeta != 0) dbeta[c] += ReduceKernels.LoopSum(column, c, c * dims.N, c * dims.N + dims.N);
                if (wantGamma != 0) dgamma[c] += ReduceKernels.LoopSum(column, dims.C + c, (dims.C + c) * dims.N, (dims.C + c) * dims.N + dims.N);
            }
            if (wantX == 0) return;
            int r = nc / dims.ChannelsPerGroup, cpg = dims.ChannelsPerGroup, stats = dims.StatCount;
            var weighted = new GammaWeightedTerm(partials, gamma, dims.C);
            float sa = ReduceKernels.LoopSum(weighted, r, r * cpg, r * cpg + cpg);
            float sb = ReduceKernels.LoopSum(weighted, stats + r, (stats + r) * cpg, (stats + r) * cpg + cpg);
            float mu = mean[r], rs = rstd[r], g = gamma[c], b = beta[c], invM = 1f / dims.GroupSize;
            for (int i = start; i < start + run; i++)
            {
                float xhat = (x[i] - mu) * rs;
                dx[i] += rs * (op.Backward(xhat * g + b, mask.Apply(i, dy[i])) * g - (sa + xhat * sb) * invM);
            }
        }
    }

    /// <summary>
    /// Backward of the plain <c>Forward</c> given dy [N,C,S] and the saved mean and rstd [N·G]. ADDS into the
    /// gradient outputs: dx [N,C,S] += ∂L/∂x, dgamma [C] += ∂L/∂γ, dbeta [C] += ∂L/∂β. Pass an empty view
    /// (<c>default</c>) for a gradient that is not needed. Deterministic (fixed summation orders, no atomics).
    /// </summary>
    public void Backward(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dy,
        ArrayView<float> dx, ArrayView<float> dgamma, ArrayView<float> dbeta, GroupNormDims dims, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0) =>
        Backward(new IdentityOp(), new NoMask(), x, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dims, variant, maxTreeWidth);

    /// <summary>
    /// Backward of the fused <c>Forward&lt;TOp, TMask&gt;</c>: dy is the gradient of mask·op(GroupNorm(x)), and the mask and
    /// the activation's derivative are applied where dy is read (β is needed for it). ADDS into the gradient outputs as the
    /// plain one does.
    /// </summary>
    public void Backward<TOp, TMask>(TOp op, TMask mask, ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dy,
        ArrayView<float> dx, ArrayView<float> dgamma, ArrayView<float> dbeta, GroupNormDims dims, ReductionVariant variant = ReductionVariant.Auto, int maxTreeWidth = 0)
        where TOp : struct, IUnaryOp where TMask : struct, IElementMask
    {
        ExpectOperands(x, dy, "dy", gamma, beta, mean, rstd, dims);
        bool wantX = dx.Length != 0, wantGamma = dgamma.Length != 0, wantBeta = dbeta.Length != 0;
        if (wantX) Expect(dx, dims.Length, "dx", dims);
        if (wantGamma) Expect(dgamma, dims.C, "dgamma", dims);
        if (wantBeta) Expect(dbeta, dims.C, "dbeta", dims);
        if (!wantX && !wantGamma && !wantBeta) return;

        // Scratch goes back to the pool once the kernels are queued: later users are queued after them on the same stream.
        int count = dims.N * dims.C;
        using var partials = device.Pool.Rent<float>(2 * count);
        RowSums<ChannelRow<TOp, TMask>, GateTerm<TOp, TMask>, GateXhatTerm<TOp, TMask>>(new ChannelRow<TOp, TMask>(op, mask, x, dy, gamma, beta, mean, rstd, partials.View, dims.ChannelsPerGroup, dims.C, count),
                                                                   count, dims.Spatial, variant, maxTreeWidth);
        // Without dx only image 0's units run: they are the ones that add dγ and dβ. An unwanted output is never written (any view stands in).
        // A unit is `run` elements, so the launch is sized as a segment launch (with whole rows, the element shape's share of
        // 2048 elements per CPU thread would have put all of N·C rows on one thread).
        int run = Run(dims, variant), units = (wantX ? dims.Length : dims.C * dims.Spatial) / run;
        device.LaunchElements(reduce.SegmentShape(run), units, new GroupNormBackwardKernel<TOp, TMask>(op, mask, x, dy, gamma, beta, mean, rstd, partials.View, wantX ? dx : x, wantGamma ? dgamma : gamma, wantBeta ? dbeta : beta,
                                                                      dims, run, wantX ? 1 : 0, wantGamma ? 1 : 0, wantBeta ? 1 : 0));
    }

    // The operands both passes share: x and y (forward) or dy (backward) of N·C·S, γ and β of C, μ and rstd of N·G.
    private static void ExpectOperands(ArrayView<float> x, ArrayView<float> other, string otherName, ArrayView<float> gamma, ArrayView<float> beta,
                                       ArrayView<float> mean, ArrayView<float> rstd, GroupNormDims dims)
    {
        Expect(x, dims.Length, "x", dims);
        Expect(other, dims.Length, otherName, dims);
        Expect(gamma, dims.C, "gamma", dims);
        Expect(beta, dims.C, "beta", dims);
        Expect(mean, dims.StatCount, "mean", dims);
        Expect(rstd, dims.StatCount, "rstd", dims);
    }

    private static void Expect(ArrayView<float> view, int length, string name, GroupNormDims dims)
    {
        if (view.Length != length)
            throw new ArgumentException($"group norm: expected {name} of {length} elements for {dims}, got {view.Length}");
    }
}
